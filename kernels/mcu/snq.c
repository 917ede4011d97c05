/* snq: see snq.h. C99, no allocation, no libm. Signed right shifts are arithmetic, as on
 * every compiler this targets (gcc, clang, armcc), exactly as TFLite's own kernels assume. */
#include "snq.h"

#include <stddef.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32)
#include <arm_acle.h>
#define SNQ_DSP 1
static inline uint32_t snq_ror8(uint32_t v) { return (v >> 8) | (v << 24); }
#else
#define SNQ_DSP 0
#endif

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

static int8_t clamp8(int32_t v, const snq_layer *l) {
  if (v < l->act_min) v = l->act_min;
  if (v > l->act_max) v = l->act_max;
  return (int8_t)v;
}

/* Bias, requantisation, zero point and the fused activation clamp of output channel c. */
static int8_t finish(const snq_layer *l, const snq_active *a, int c, int32_t acc) {
  int32_t mult = a->mult[c];
  if (mult < 0) { /* this level's folded norm gain is negative: the weights' sign flips */
    acc = -acc;
    mult = -mult;
  }
  acc += a->bias[c];
  return clamp8(snq_requant(acc, mult, a->shift[c]) + l->out_zp, l);
}

#if SNQ_DSP
/* Dot products over an im2col row whose groups of 4 are stored as x0, x2, x1, x3, the order
 * __sxtb16 unpacks 4 weights in (bytes 0, 2 and bytes 1, 3). Two output rows share each load. */
static void dot2(const int8_t *w0, const int8_t *w1, const int16_t *x, int n, int32_t *acc) {
  int32_t a0 = acc[0], a1 = acc[1];
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    uint32_t u0, u1, xa, xb;
    memcpy(&u0, w0 + i, 4);
    memcpy(&u1, w1 + i, 4);
    memcpy(&xa, x + i, 4);
    memcpy(&xb, x + i + 2, 4);
    a0 = __smlad(__sxtb16(u0), xa, a0);
    a0 = __smlad(__sxtb16(snq_ror8(u0)), xb, a0);
    a1 = __smlad(__sxtb16(u1), xa, a1);
    a1 = __smlad(__sxtb16(snq_ror8(u1)), xb, a1);
  }
  for (; i < n; ++i) {
    a0 += w0[i] * x[i];
    a1 += w1[i] * x[i];
  }
  acc[0] = a0;
  acc[1] = a1;
}

static void reorder(int16_t *x, int n) {
  for (int i = 0; i + 4 <= n; i += 4) {
    const int16_t t = x[i + 1];
    x[i + 1] = x[i + 2];
    x[i + 2] = t;
  }
}
#else
static void dot2(const int8_t *w0, const int8_t *w1, const int16_t *x, int n, int32_t *acc) {
  int32_t a0 = acc[0], a1 = acc[1];
  for (int i = 0; i < n; ++i) {
    const int32_t xi = x[i];
    a0 += w0[i] * xi;
    a1 += w1[i] * xi;
  }
  acc[0] = a0;
  acc[1] = a1;
}

static void reorder(int16_t *x, int n) {
  (void)x;
  (void)n;
}
#endif

static void conv(const snq_layer *l, const snq_active *a, const int8_t *x, int8_t *y,
                 int16_t *col) {
  const int cin = a->in_c, cout = a->out_c, taps = l->kh * l->kw;
  const int32_t off = -l->in_zp;
  const size_t row = (size_t)taps * (size_t)l->in_full;
  const int contiguous = cin == l->in_full; /* then one dot product over all taps */
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox) {
      /* im2col with the input offset added; padding is 0 = the zero point's real value. */
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
      if (contiguous) reorder(col, taps * cin);
      int8_t *yp = y + ((size_t)oy * (size_t)l->out_w + (size_t)ox) * (size_t)cout;
      int co = 0;
      for (; co < cout; co += 2) {
        const int second = co + 1 < cout; /* odd tail: the second row repeats the first */
        const int8_t *w0 = l->weight + (size_t)co * row;
        const int8_t *w1 = second ? w0 + row : w0;
        int32_t acc[2] = {0, 0};
        if (contiguous) {
          dot2(w0, w1, col, taps * cin, acc);
        } else {
          for (int t = 0; t < taps; ++t)
            dot2(w0 + (size_t)t * (size_t)l->in_full, w1 + (size_t)t * (size_t)l->in_full,
                 col + (size_t)t * (size_t)cin, cin, acc);
        }
        yp[co] = finish(l, a, co, acc[0]);
        if (second) yp[co + 1] = finish(l, a, co + 1, acc[1]);
      }
    }
  }
}

static void depthwise(const snq_layer *l, const snq_active *a, const int8_t *x, int8_t *y) {
  const int c = a->out_c, taps = l->kh * l->kw;
  const int32_t off = -l->in_zp;
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox) {
      int8_t *yp = y + ((size_t)oy * (size_t)l->out_w + (size_t)ox) * (size_t)c;
      for (int ch = 0; ch < c; ++ch) {
        const int8_t *w = l->weight + (size_t)ch * (size_t)taps;
        int32_t acc = 0;
        for (int ky = 0; ky < l->kh; ++ky) {
          const int iy = oy * l->sh - l->pad_top + ky;
          if (iy < 0 || iy >= l->in_h) continue;
          for (int kx = 0; kx < l->kw; ++kx) {
            const int ix = ox * l->sw - l->pad_left + kx;
            if (ix < 0 || ix >= l->in_w) continue;
            acc += w[ky * l->kw + kx] *
                   (x[((size_t)iy * (size_t)l->in_w + (size_t)ix) * (size_t)c + (size_t)ch] + off);
          }
        }
        yp[ch] = finish(l, a, ch, acc);
      }
    }
  }
}

static void pool(const snq_layer *l, const snq_active *a, const int8_t *x, int8_t *y) {
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

static void add(const snq_layer *l, const snq_active *a, const int8_t *x1, const int8_t *x2,
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
    last = dst;
    last_size = (size_t)l->out_h * (size_t)l->out_w * (size_t)a->out_c;
  }
  for (size_t i = 0; i < last_size; ++i) output[i] = last[i];
}
