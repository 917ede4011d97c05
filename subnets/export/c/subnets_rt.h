/* subnets_rt: a tiny C99 interpreter for nested (REDS) networks whose levels share weights.
 *
 * Every layer's weights are stored once, output-unit-major: row `o` holds output unit o's
 * weights for every input unit of the FULL network, so a level that keeps `out` outputs and
 * `in` inputs reads the first `out` rows, each up to `in` with the full-row stride. Switching
 * level rewrites each layer's active widths and BatchNorm pointers: nothing is copied.
 *
 * Activations are H x W x C (channels last) packed at the active width, in two ping-pong
 * buffers the generated model sizes for its full level. No malloc, no globals here.
 *
 * References: Corti et al., REDS (arXiv:2311.13349), Sec. 3.1 and 5.
 */
#ifndef SUBNETS_RT_H_
#define SUBNETS_RT_H_

#ifdef __cplusplus
extern "C" {
#endif

enum snrt_kind {
  SNRT_CONV = 0,      /* dense is a 1x1 conv on a 1x1 map */
  SNRT_DEPTHWISE = 1, /* one kh x kw filter per channel; in and out widths are equal */
  SNRT_AVGPOOL = 2    /* global average over H x W */
};

typedef struct {
  int kind;
  int in_h, in_w, out_h, out_w;   /* spatial sizes (1 for dense) */
  int kh, kw, sh, sw;             /* kernel and strides */
  int pad_top, pad_left;          /* SAME padding, XLA's convention (the smaller half first) */
  int in_full;                    /* full input width: the row stride of the weights */
  const float *weight;            /* conv [out][kh][kw][in_full]; depthwise [c][kh*kw] */
  const float *bias;              /* [out] or NULL */
  int in_group, out_group;        /* columns of the level table */
  int relu;
} snrt_layer;

typedef struct {                  /* what a level switch writes, per layer */
  int in_c, out_c;
  const float *scale, *shift;     /* this level's BatchNorm affine, or NULL */
} snrt_active;

typedef struct {
  int num_layers, num_groups, num_levels;
  const snrt_layer *layers;
  const int *widths;              /* [num_levels][num_groups] */
  const float *const *scale;      /* [num_levels][num_layers], NULL where no norm */
  const float *const *shift;
  snrt_active *active;            /* [num_layers] */
  float *buf0, *buf1;             /* ping-pong activations, full-level size each */
} snrt_model;

/* Make `level` active: O(num_layers) writes, no weight is moved. Returns 0, or -1 if out
 * of range (the active level is then unchanged). */
int snrt_set_level(const snrt_model *m, int level);

/* One example: `input` in the model's input layout, `output` gets the logits. */
void snrt_run(const snrt_model *m, const float *input, float *output);

#ifdef __cplusplus
}
#endif

#endif /* SUBNETS_RT_H_ */
