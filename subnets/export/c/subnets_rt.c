/* subnets_rt: see subnets_rt.h. C99, no allocation, no libm. */
#include "subnets_rt.h"

#include <stddef.h>

int snrt_set_level(const snrt_model *m, int level) {
  if (level < 0 || level >= m->num_levels) return -1;
  const int *w = m->widths + (size_t)level * (size_t)m->num_groups;
  for (int i = 0; i < m->num_layers; ++i) {
    const snrt_layer *l = &m->layers[i];
    snrt_active *a = &m->active[i];
    a->in_c = w[l->in_group];
    a->out_c = w[l->out_group];
    a->scale = m->scale[(size_t)level * (size_t)m->num_layers + (size_t)i];
    a->shift = m->shift[(size_t)level * (size_t)m->num_layers + (size_t)i];
  }
  return 0;
}

/* Bias, this level's BatchNorm affine, ReLU: what follows every weighted layer. */
static float finish(const snrt_layer *l, const snrt_active *a, int c, float acc) {
  if (l->bias) acc += l->bias[c];
  if (a->scale) acc = acc * a->scale[c] + a->shift[c];
  if (l->relu && acc < 0.0f) acc = 0.0f;
  return acc;
}

static void conv(const snrt_layer *l, const snrt_active *a, const float *x, float *y) {
  const int cin = a->in_c, cout = a->out_c;
  const size_t row = (size_t)l->kh * (size_t)l->kw * (size_t)l->in_full;
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox) {
      float *yp = y + ((size_t)oy * (size_t)l->out_w + (size_t)ox) * (size_t)cout;
      for (int co = 0; co < cout; ++co) {
        const float *w = l->weight + (size_t)co * row;
        float acc = 0.0f;
        for (int ky = 0; ky < l->kh; ++ky) {
          const int iy = oy * l->sh - l->pad_top + ky;
          if (iy < 0 || iy >= l->in_h) continue;
          for (int kx = 0; kx < l->kw; ++kx) {
            const int ix = ox * l->sw - l->pad_left + kx;
            if (ix < 0 || ix >= l->in_w) continue;
            const float *xp = x + ((size_t)iy * (size_t)l->in_w + (size_t)ix) * (size_t)cin;
            const float *wp = w + ((size_t)ky * (size_t)l->kw + (size_t)kx) * (size_t)l->in_full;
            for (int ci = 0; ci < cin; ++ci) acc += wp[ci] * xp[ci];
          }
        }
        yp[co] = finish(l, a, co, acc);
      }
    }
  }
}

static void depthwise(const snrt_layer *l, const snrt_active *a, const float *x, float *y) {
  const int c = a->out_c, taps = l->kh * l->kw;
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox) {
      float *yp = y + ((size_t)oy * (size_t)l->out_w + (size_t)ox) * (size_t)c;
      for (int ch = 0; ch < c; ++ch) {
        const float *w = l->weight + (size_t)ch * (size_t)taps;
        float acc = 0.0f;
        for (int ky = 0; ky < l->kh; ++ky) {
          const int iy = oy * l->sh - l->pad_top + ky;
          if (iy < 0 || iy >= l->in_h) continue;
          for (int kx = 0; kx < l->kw; ++kx) {
            const int ix = ox * l->sw - l->pad_left + kx;
            if (ix < 0 || ix >= l->in_w) continue;
            acc += w[ky * l->kw + kx] *
                   x[((size_t)iy * (size_t)l->in_w + (size_t)ix) * (size_t)c + (size_t)ch];
          }
        }
        yp[ch] = finish(l, a, ch, acc);
      }
    }
  }
}

static void avgpool(const snrt_layer *l, const snrt_active *a, const float *x, float *y) {
  const int c = a->in_c, n = l->in_h * l->in_w;
  for (int ch = 0; ch < c; ++ch) y[ch] = 0.0f;
  for (int p = 0; p < n; ++p)
    for (int ch = 0; ch < c; ++ch) y[ch] += x[(size_t)p * (size_t)c + (size_t)ch];
  for (int ch = 0; ch < c; ++ch) y[ch] /= (float)n;
}

void snrt_run(const snrt_model *m, const float *input, float *output) {
  const float *src = input;
  for (int i = 0; i < m->num_layers; ++i) {
    const snrt_layer *l = &m->layers[i];
    float *dst = (i == m->num_layers - 1) ? output : (i % 2 == 0 ? m->buf0 : m->buf1);
    switch (l->kind) {
      case SNRT_CONV: conv(l, &m->active[i], src, dst); break;
      case SNRT_DEPTHWISE: depthwise(l, &m->active[i], src, dst); break;
      default: avgpool(l, &m->active[i], src, dst); break;
    }
    src = dst;
  }
}
