/* Unit checks of TFLite's fixed-point helpers (values worked by hand from gemmlowp's rules). */
#include <stdint.h>
#include <stdio.h>

#include "snq.h"

static int failures = 0;
#define CHECK(expr, want)                                                         \
  do {                                                                            \
    const long got_ = (long)(expr);                                               \
    if (got_ != (long)(want)) {                                                   \
      printf("FAIL %s = %ld, want %ld\n", #expr, got_, (long)(want));             \
      ++failures;                                                                 \
    }                                                                             \
  } while (0)

int main(void) {
  CHECK(snq_srdhm(INT32_MIN, INT32_MIN), INT32_MAX); /* the one saturating case */
  CHECK(snq_srdhm(1 << 30, 1 << 30), 1 << 29);       /* 0.5 * 0.5 = 0.25 */
  CHECK(snq_srdhm(3, 1 << 30), 2);                    /* 1.5 rounds up */
  CHECK(snq_srdhm(-3, 1 << 30), -1);                  /* -1.5: nudge 1 - 2^30, truncated */
  CHECK(snq_rdbpot(5, 1), 3);                         /* 2.5 -> 3 (half away from zero) */
  CHECK(snq_rdbpot(-5, 1), -3);
  CHECK(snq_rdbpot(-4, 1), -2);
  CHECK(snq_rdbpot(7, 0), 7);
  CHECK(snq_requant(100, 1 << 30, 0), 50);            /* x * 0.5 */
  CHECK(snq_requant(100, 1 << 30, -2), 13);           /* 12.5 -> 13 */
  CHECK(snq_requant(-100, 1 << 30, -2), -13);
  CHECK(snq_requant(3, 1 << 30, 2), 6);               /* left shift 2, then * 0.5 */
  const int8_t v[5] = {-3, 7, 7, -128, 2};
  CHECK(snq_argmax(v, 5), 1);                         /* the first of ties */
  /* The kernels' form equals TFLite's on 2^20 pseudo-random (x, multiplier, shift). */
  uint32_t r = 12345u;
  for (long i = 0; i < (1L << 20); ++i) {
    r = r * 1664525u + 1013904223u;
    const int32_t x = (int32_t)r;
    r = r * 1664525u + 1013904223u;
    const int32_t m = (int32_t)(0x40000000u | (r >> 2));
    r = r * 1664525u + 1013904223u;
    const int shift = (int)(r % 39u) - 31; /* -31 .. 7 */
    const int32_t xs = shift > 0 ? x >> 8 : x; /* keep x << shift in range, as real sums are */
    if (snq_requant_kernel(xs, m, shift) != snq_requant(xs, m, shift)) {
      printf("FAIL requant x=%ld m=%ld shift=%d\n", (long)xs, (long)m, shift);
      ++failures;
      break;
    }
  }
  if (failures == 0) printf("ok\n");
  return failures != 0;
}
