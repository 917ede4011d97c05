/* snf: see snf.h. C99, no allocation, no libm. */
#include "snf.h"

#include <stddef.h>

int snf_set_level(const snf_model *m, int level) {
  if (level < 0 || level >= m->num_levels) return -1;
  const int *w = m->widths + (size_t)level * (size_t)m->num_groups;
  for (int i = 0; i < m->num_layers; ++i) {
    const snf_layer *l = &m->layers[i];
    snf_active *a = &m->active[i];
    a->in_c = w[l->in_group];
    a->out_c = w[l->out_group];
    a->affine = m->affine[(size_t)level * (size_t)m->num_layers + (size_t)i];
  }
  return 0;
}

static float activate(int act, float v) {
  if (act != SNF_NONE && v < 0.0f) v = 0.0f;
  if (act == SNF_RELU6 && v > 6.0f) v = 6.0f;
  return v;
}

/* Bias, this level's norm affine, the activation: what follows every weighted step. */
static float finish(const snf_layer *l, const snf_active *a, int c, float acc) {
  if (l->bias) acc += l->bias[c];
  if (a->affine.scale) acc = acc * a->affine.scale[c] + a->affine.shift[c];
  return activate(l->act, acc);
}

static void conv(const snf_layer *l, const snf_active *a, const float *x, float *y) {
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

/* Depthwise conv, and the pools (weight NULL): one window per channel. */
static void window(const snf_layer *l, const snf_active *a, const float *x, float *y) {
  const int c = a->out_c, taps = l->kh * l->kw;
  for (int oy = 0; oy < l->out_h; ++oy) {
    for (int ox = 0; ox < l->out_w; ++ox) {
      float *yp = y + ((size_t)oy * (size_t)l->out_w + (size_t)ox) * (size_t)c;
      for (int ch = 0; ch < c; ++ch) {
        float acc = 0.0f;
        int seen = 0;
        for (int ky = 0; ky < l->kh; ++ky) {
          const int iy = oy * l->sh - l->pad_top + ky;
          if (iy < 0 || iy >= l->in_h) continue;
          for (int kx = 0; kx < l->kw; ++kx) {
            const int ix = ox * l->sw - l->pad_left + kx;
            if (ix < 0 || ix >= l->in_w) continue;
            const float v =
                x[((size_t)iy * (size_t)l->in_w + (size_t)ix) * (size_t)c + (size_t)ch];
            if (l->kind == SNF_MAXPOOL) {
              if (!seen || v > acc) acc = v;
              seen = 1;
            } else if (l->kind == SNF_AVGPOOL) {
              acc += v;
            } else {
              acc += l->weight[(size_t)ch * (size_t)taps + (size_t)(ky * l->kw + kx)] * v;
            }
          }
        }
        if (l->kind == SNF_AVGPOOL) acc /= (float)taps; /* padding counts, as lax does */
        yp[ch] = l->kind == SNF_DEPTHWISE ? finish(l, a, ch, acc) : acc;
      }
    }
  }
}

static void elementwise(const snf_layer *l, const snf_active *a, const float *x,
                        const float *x2, float *y) {
  const int c = a->out_c;
  const size_t n = (size_t)l->out_h * (size_t)l->out_w;
  for (size_t p = 0; p < n; ++p) {
    for (int ch = 0; ch < c; ++ch) {
      const size_t i = p * (size_t)c + (size_t)ch;
      float v = x[i];
      if (l->kind == SNF_ADD) v += x2[i];
      else if (a->affine.scale) v = v * a->affine.scale[ch] + a->affine.shift[ch];
      y[i] = activate(l->act, v);
    }
  }
}

void snf_run(const snf_model *m, const float *input, float *output) {
  for (int i = 0; i < m->num_layers; ++i) {
    const snf_layer *l = &m->layers[i];
    const snf_active *a = &m->active[i];
    const float *x = l->src == SNF_INPUT ? input : m->arena + l->src;
    const float *x2 = l->src2 == SNF_INPUT ? input : m->arena + (l->src2 < 0 ? 0 : l->src2);
    float *y = (i == m->num_layers - 1) ? output : m->arena + l->dst;
    switch (l->kind) {
      case SNF_CONV: conv(l, a, x, y); break;
      case SNF_ADD:
      case SNF_AFFINE: elementwise(l, a, x, x2, y); break;
      default: window(l, a, x, y); break;
    }
  }
}
