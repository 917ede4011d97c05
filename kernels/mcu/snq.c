/* snq: see snq.h. C99, no allocation, no libm. Signed right shifts are arithmetic, as on
 * every compiler this targets (gcc, clang, armcc), exactly as TFLite's own kernels assume. */
#include "snq.h"

#include <stddef.h>
#include <string.h>

#if defined(__GNUC__)
#define SNQ_NOINLINE __attribute__((noinline)) /* one kernel per function: fewer spills */
#else
#define SNQ_NOINLINE
#endif

#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32)
#include <arm_acle.h>
#define SNQ_DSP 1
/* sxtb16 with its rotate operand: bytes 1 and 3 sign-extended in one instruction. */
static inline int32_t sxtb16_ror8(uint32_t v) {
  int32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
  return r;
}
static inline int32_t sxtab16_ror8(int32_t a, uint32_t v) {
  int32_t r;
  __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(v));
  return r;
}
#else
#define SNQ_DSP 0
#endif

/* TFLite's SaturatingRoundingDoublingHighMul is (a*b + 2^30) >> 31 with a floor shift: for
 * a*b < 0 its nudge 1 - 2^30 and truncation toward zero give the same integer. It saturates
 * only for a = b = INT32_MIN, which a multiplier >= 2^30 never is, so the kernels use this. */
static inline int32_t srdhm_pos(int32_t a, int32_t b) {
  return (int32_t)(((int64_t)a * (int64_t)b + (1 << 30)) >> 31);
}

/* RoundingDivideByPOT for exponent >= 1: round half away from zero. */
static inline int32_t rdbpot_fast(int32_t x, int e) {
  const int32_t mask = (int32_t)((1u << e) - 1u);
  return (x >> e) + ((x & mask) > (mask >> 1) + (x < 0));
}

static inline int32_t requant_fast(int32_t x, int32_t mult, int shift) {
  if (shift > 0) return srdhm_pos((int32_t)((uint32_t)x << shift), mult);
  const int32_t r = srdhm_pos(x, mult);
  return shift == 0 ? r : rdbpot_fast(r, -shift);
}

int32_t snq_requant_kernel(int32_t x, int32_t multiplier, int shift) {
  return requant_fast(x, multiplier, shift);
}

int32_t snq_srdhm(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int64_t t = ab + (ab >= 0 ? (1 << 30) : (1 - (1 << 30)));
  /* t / 2^31 truncated toward zero, without a 64-bit division (slow on Cortex-M0+). */
  return (int32_t)(t >= 0 ? (t >> 31) : -((-t) >> 31));
}

int32_t snq_rdbpot(int32_t x, int exponent) {
  const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t snq_requant(int32_t x, int32_t multiplier, int shift) {
  const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  return snq_rdbpot(snq_srdhm((int32_t)((uint32_t)x << left), multiplier), right);
}

int snq_argmax(const int8_t *x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

int snq_set_level(const snq_model *m, int level) {
  if (level < 0 || level >= m->num_levels) return -1;
  const int32_t *w = m->widths + (size_t)level * (size_t)m->num_groups;
  const snq_tables *t = m->tables + (size_t)level * (size_t)m->num_layers;
  for (int i = 0; i < m->num_layers; ++i) {
    snq_active *a = &m->active[i];
    a->in_c = w[m->layers[i].in_group];
    a->out_c = w[m->layers[i].out_group];
    a->mult = t[i].mult;
    a->shift = t[i].shift;
    a->bias = t[i].bias;
  }
  return 0;
}

static inline int8_t clamp8(int32_t v, const snq_layer *l) {
  if (v < l->act_min) v = l->act_min;
  if (v > l->act_max) v = l->act_max;
  return (int8_t)v;
}

/* Bias, requantisation, zero point and the fused activation clamp of output channel c. */
static inline int8_t finish(const snq_layer *l, const snq_active *a, int c, int32_t acc) {
  int32_t mult = a->mult[c];
  if (mult < 0) { /* this level's folded norm gain is negative: the weights' sign flips */
    acc = -acc;
    mult = -mult;
  }
  acc += a->bias[c];
  return clamp8(requant_fast(acc, mult, a->shift[c]) + l->out_zp, l);
}

#if SNQ_DSP
/* Dot products over an im2col row whose groups of 4 are stored as x0, x2, x1, x3, the order
 * __sxtb16 unpacks 4 weights in (bytes 0, 2 and bytes 1, 3). Four output rows share each
 * input load: per 16 MACs 4 + 2 loads, 8 unpacks, 8 dual MACs. */
static void dot4(const int8_t *const *w, const int16_t *x, int n, int32_t *acc) {
  const int8_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    uint32_t u, xa, xb;
    memcpy(&xa, x + i, 4);
    memcpy(&xb, x + i + 2, 4);
    memcpy(&u, w0 + i, 4);
    a0 = __smlad(__sxtb16(u), xa, a0);
    a0 = __smlad(sxtb16_ror8(u), xb, a0);
    memcpy(&u, w1 + i, 4);
    a1 = __smlad(__sxtb16(u), xa, a1);
    a1 = __smlad(sxtb16_ror8(u), xb, a1);
    memcpy(&u, w2 + i, 4);
    a2 = __smlad(__sxtb16(u), xa, a2);
    a2 = __smlad(sxtb16_ror8(u), xb, a2);
    memcpy(&u, w3 + i, 4);
    a3 = __smlad(__sxtb16(u), xa, a3);
    a3 = __smlad(sxtb16_ror8(u), xb, a3);
  }
  for (; i < n; ++i) {
    const int32_t xi = x[i];
    a0 += w0[i] * xi;
    a1 += w1[i] * xi;
    a2 += w2[i] * xi;
    a3 += w3[i] * xi;
  }
  acc[0] += a0;
  acc[1] += a1;
  acc[2] += a2;
  acc[3] += a3;
}

/* Two output rows x two im2col columns: each weight word serves 2 columns and each column
 * word 2 rows (per 16 MACs: 2 + 4 loads, 4 unpacks, 8 dual MACs). acc: r0c0, r0c1, r1c0, r1c1. */
static void dot2x2(const int8_t *w0, const int8_t *w1, const int16_t *c0, const int16_t *c1,
                   int n, int32_t *acc) {
  int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    uint32_t u0, u1, x0a, x0b, x1a, x1b;
    memcpy(&u0, w0 + i, 4);
    memcpy(&x0a, c0 + i, 4);
    memcpy(&x1a, c1 + i, 4);
    int32_t wl = __sxtb16(u0);
    a00 = __smlad(wl, x0a, a00);
    a01 = __smlad(wl, x1a, a01);
    memcpy(&u1, w1 + i, 4);
    wl = __sxtb16(u1);
    a10 = __smlad(wl, x0a, a10);
    a11 = __smlad(wl, x1a, a11);
    memcpy(&x0b, c0 + i + 2, 4);
    memcpy(&x1b, c1 + i + 2, 4);
    wl = sxtb16_ror8(u0);
    a00 = __smlad(wl, x0b, a00);
    a01 = __smlad(wl, x1b, a01);
    wl = sxtb16_ror8(u1);
    a10 = __smlad(wl, x0b, a10);
    a11 = __smlad(wl, x1b, a11);
  }
  for (; i < n; ++i) {
    a00 += w0[i] * c0[i];
    a01 += w0[i] * c1[i];
    a10 += w1[i] * c0[i];
    a11 += w1[i] * c1[i];
  }
  acc[0] = a00;
  acc[1] = a01;
  acc[2] = a10;
  acc[3] = a11;
}

static void reorder(int16_t *x, int n) {
  for (int i = 0; i + 4 <= n; i += 4) {
    const int16_t t = x[i + 1];
    x[i + 1] = x[i + 2];
    x[i + 2] = t;
  }
}
#else
static void dot4(const int8_t *const *w, const int16_t *x, int n, int32_t *acc) {
  const int8_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (int i = 0; i < n; ++i) {
    const int32_t xi = x[i];
    a0 += w0[i] * xi;
    a1 += w1[i] * xi;
    a2 += w2[i] * xi;
    a3 += w3[i] * xi;
  }
  acc[0] += a0;
  acc[1] += a1;
  acc[2] += a2;
  acc[3] += a3;
}

static void reorder(int16_t *x, int n) {
  (void)x;
  (void)n;
}
#endif

/* im2col of output position (oy, ox) with the input offset added; padding is 0, the zero
 * point's real value. Under DSP each group of 4 is stored x0, x2, x1, x3 (see reorder). */
static void im2col(const snq_layer *l, int cin, int contiguous, int32_t off, const int8_t *x,
                   int oy, int ox, int16_t *col) {
  for (int ky = 0; ky < l->kh; ++ky) {
    const int iy = oy * l->sh - l->pad_top + ky;
    for (int kx = 0; kx < l->kw; ++kx) {
      const int ix = ox * l->sw - l->pad_left + kx;
      int16_t *c = col + (size_t)(ky * l->kw + kx) * (size_t)cin;
      if (iy < 0 || iy >= l->in_h || ix < 0 || ix >= l->in_w) {
        for (int ci = 0; ci < cin; ++ci) c[ci] = 0;
      } else {
        const int8_t *xp = x + ((size_t)iy * (size_t)l->in_w + (size_t)ix) * (size_t)cin;
        for (int ci = 0; ci < cin; ++ci) c[ci] = (int16_t)(xp[ci] + off);
      }
      if (!contiguous) reorder(c, cin);
    }
  }
  if (contiguous) reorder(col, l->kh * l->kw * cin);
}

/* Scratch: two im2col columns of kh*kw*in_full int16 each (the generator sizes it). */
SNQ_NOINLINE static void conv(const snq_layer *l, const snq_active *a, const int8_t *x,
                              int8_t *y, int16_t *col) {
  const int cin = a->in_c, cout = a->out_c, taps = l->kh * l->kw;
  const int32_t off = -l->in_zp;
  const size_t row = (size_t)taps * (size_t)l->in_full, len = (size_t)taps * (size_t)cin;
  const int contiguous = cin == l->in_full; /* then one dot product over all taps */
  const int positions = l->out_h * l->out_w;
  int p = 0;
#if SNQ_DSP
  int16_t *col1 = col + len;
  for (; contiguous && p + 2 <= positions; p += 2) {
    im2col(l, cin, 1, off, x, p / l->out_w, p % l->out_w, col);
    im2col(l, cin, 1, off, x, (p + 1) / l->out_w, (p + 1) % l->out_w, col1);
    int8_t *y0 = y + (size_t)p * (size_t)cout, *y1 = y0 + cout;
    for (int co = 0; co < cout; co += 2) {
      const int8_t *w0 = l->weight + (size_t)co * row;
      const int second = co + 1 < cout;
      int32_t acc[4];
      dot2x2(w0, second ? w0 + row : w0, col, col1, (int)len, acc);
      y0[co] = finish(l, a, co, acc[0]);
      y1[co] = finish(l, a, co, acc[1]);
      if (second) {
        y0[co + 1] = finish(l, a, co + 1, acc[2]);
        y1[co + 1] = finish(l, a, co + 1, acc[3]);
      }
    }
  }
#endif
  for (; p < positions; ++p) {
    im2col(l, cin, contiguous, off, x, p / l->out_w, p % l->out_w, col);
    int8_t *yp = y + (size_t)p * (size_t)cout;
    for (int co = 0; co < cout; co += 4) {
      const int8_t *w[4];
      for (int k = 0; k < 4; ++k) /* a short tail repeats the last row */
        w[k] = l->weight + (size_t)(co + k < cout ? co + k : cout - 1) * row;
      int32_t acc[4] = {0, 0, 0, 0};
      if (contiguous) {
        dot4(w, col, (int)len, acc);
      } else {
        for (int t = 0; t < taps; ++t) {
          const size_t o = (size_t)t * (size_t)l->in_full;
          const int8_t *wt[4] = {w[0] + o, w[1] + o, w[2] + o, w[3] + o};
          dot4(wt, col + (size_t)t * (size_t)cin, cin, acc);
        }
      }
      for (int k = 0; k < 4 && co + k < cout; ++k) yp[co + k] = finish(l, a, co + k, acc[k]);
    }
  }
}

/* Weights [kh*kw][in_full] (tap-major, a level reads the first c of each tap row): adjacent
 * channels are adjacent in both the input and the weights, so 4 channels go per word. */
SNQ_NOINLINE static void depthwise(const snq_layer *l, const snq_active *a, const int8_t *x, int8_t *y) {
  const int c = a->out_c, cf = l->in_full;
  const int32_t off = -l->in_zp;
  for (int oy = 0; oy < l->out_h; ++oy) {
    const int iy0 = oy * l->sh - l->pad_top;
    const int ky0 = iy0 < 0 ? -iy0 : 0;
    const int ky1 = l->in_h - iy0 < l->kh ? l->in_h - iy0 : l->kh;
    for (int ox = 0; ox < l->out_w; ++ox) {
      const int ix0 = ox * l->sw - l->pad_left;
      const int kx0 = ix0 < 0 ? -ix0 : 0;
      const int kx1 = l->in_w - ix0 < l->kw ? l->in_w - ix0 : l->kw;
      int8_t *yp = y + ((size_t)oy * (size_t)l->out_w + (size_t)ox) * (size_t)c;
      int ch = 0;
#if SNQ_DSP
      const int32_t off2 = (int32_t)(((uint32_t)off & 0xFFFFu) | ((uint32_t)off << 16));
      for (; ch + 4 <= c; ch += 4) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (int ky = ky0; ky < ky1; ++ky) {
          const int8_t *xp =
              x + ((size_t)(iy0 + ky) * (size_t)l->in_w + (size_t)(ix0 + kx0)) * (size_t)c + ch;
          const int8_t *wp = l->weight + (size_t)(ky * l->kw + kx0) * (size_t)cf + ch;
          for (int kx = kx0; kx < kx1; ++kx, xp += c, wp += cf) {
            uint32_t xv, wv;
            memcpy(&xv, xp, 4);
            memcpy(&wv, wp, 4);
            const int32_t x02 = __sxtab16(off2, xv), x13 = sxtab16_ror8(off2, xv);
            const int32_t w02 = __sxtb16(wv), w13 = sxtb16_ror8(wv);
            a0 = __smlabb(w02, x02, a0);
            a2 = __smlatt(w02, x02, a2);
            a1 = __smlabb(w13, x13, a1);
            a3 = __smlatt(w13, x13, a3);
          }
        }
        yp[ch] = finish(l, a, ch, a0);
        yp[ch + 1] = finish(l, a, ch + 1, a1);
        yp[ch + 2] = finish(l, a, ch + 2, a2);
        yp[ch + 3] = finish(l, a, ch + 3, a3);
      }
#endif
      for (; ch < c; ++ch) {
        int32_t acc = 0;
        for (int ky = ky0; ky < ky1; ++ky) {
          const int8_t *xp =
              x + ((size_t)(iy0 + ky) * (size_t)l->in_w + (size_t)(ix0 + kx0)) * (size_t)c + ch;
          const int8_t *wp = l->weight + (size_t)(ky * l->kw + kx0) * (size_t)cf + ch;
          for (int kx = kx0; kx < kx1; ++kx, xp += c, wp += cf) acc += *wp * (*xp + off);
        }
        yp[ch] = finish(l, a, ch, acc);
      }
    }
  }
}

SNQ_NOINLINE static void pool(const snq_layer *l, const snq_active *a, const int8_t *x, int8_t *y) {
  const int c = a->in_c;
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox) {
      int8_t *yp = y + ((size_t)oy * (size_t)l->out_w + (size_t)ox) * (size_t)c;
      for (int ch = 0; ch < c; ++ch) {
        int32_t acc = l->kind == SNQ_MAXPOOL ? -128 : 0, count = 0;
        for (int ky = 0; ky < l->kh; ++ky) {
          const int iy = oy * l->sh - l->pad_top + ky;
          if (iy < 0 || iy >= l->in_h) continue;
          for (int kx = 0; kx < l->kw; ++kx) {
            const int ix = ox * l->sw - l->pad_left + kx;
            if (ix < 0 || ix >= l->in_w) continue;
            const int32_t v =
                x[((size_t)iy * (size_t)l->in_w + (size_t)ix) * (size_t)c + (size_t)ch];
            if (l->kind == SNQ_MAXPOOL) {
              if (v > acc) acc = v;
            } else {
              acc += v;
            }
            ++count;
          }
        }
        if (l->kind == SNQ_AVGPOOL && count > 0) /* round half away from zero, as TFLite */
          acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
        yp[ch] = clamp8(acc, l);
      }
    }
  }
}

SNQ_NOINLINE static void add(const snq_layer *l, const snq_active *a, const int8_t *x1, const int8_t *x2,
                int8_t *y) {
  const size_t n = (size_t)l->out_h * (size_t)l->out_w * (size_t)a->out_c;
  for (size_t i = 0; i < n; ++i) {
    const int32_t s1 = (int32_t)((uint32_t)(x1[i] - l->in_zp) << 20);
    const int32_t s2 = (int32_t)((uint32_t)(x2[i] - l->in2_zp) << 20);
    const int32_t v1 = snq_rdbpot(snq_srdhm(s1, l->in1_mult), -l->in1_shift);
    const int32_t v2 = snq_rdbpot(snq_srdhm(s2, l->in2_mult), -l->in2_shift);
    const int32_t v = snq_rdbpot(snq_srdhm(v1 + v2, l->out_mult), -l->out_shift);
    y[i] = clamp8(v + l->out_zp, l);
  }
}

void snq_run(const snq_model *m, const int8_t *input, int8_t *output) {
  const int8_t *last = input;
  size_t last_size = 0;
  for (int i = 0; i < m->num_layers; ++i) {
    const snq_layer *l = &m->layers[i];
    const snq_active *a = &m->active[i];
    const int8_t *src = l->src == SNQ_INPUT ? input : m->arena + l->src;
    int8_t *dst = m->arena + l->dst;
    switch (l->kind) {
      case SNQ_CONV: conv(l, a, src, dst, m->scratch); break;
      case SNQ_DEPTHWISE: depthwise(l, a, src, dst); break;
      case SNQ_ADD:
        add(l, a, src, l->src2 == SNQ_INPUT ? input : m->arena + l->src2, dst);
        break;
      default: pool(l, a, src, dst); break;
    }
#ifdef SNQ_PROFILE
    snq_profile(i); /* called after layer i: the firmware's per-layer timer hook */
#endif
    last = dst;
    last_size = (size_t)l->out_h * (size_t)l->out_w * (size_t)a->out_c;
  }
  for (size_t i = 0; i < last_size; ++i) output[i] = last[i];
}
