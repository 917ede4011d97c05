/* snf: the float32 twin of snq, a C99 interpreter of the same lowered program (conv/dense,
 * depthwise, average and max pooling, residual add, per-channel affine, ReLU/ReLU6) for nested
 * (REDS) families whose levels share their weights.
 *
 * Every layer's weights are stored once, output-unit-major at the FULL width: conv
 * [out][kh][kw][in_full], depthwise [c][kh*kw]; a level reads the first `out` rows, each up to
 * `in` with the full-row stride. A level switch writes each step's active widths and its norm
 * affine pointers: nothing is copied. Activations are H x W x C packed at the active width in
 * one static arena (offsets planned by the exporter). No malloc, no libm.
 *
 * References: Corti et al., REDS (arXiv:2311.13349), Sec. 3.1 and 5.
 */
#ifndef SUBNETS_SNF_H_
#define SUBNETS_SNF_H_

#ifdef __cplusplus
extern "C" {
#endif

enum snf_kind { SNF_CONV = 0, SNF_DEPTHWISE = 1, SNF_AVGPOOL = 2, SNF_MAXPOOL = 3, SNF_ADD = 4,
                SNF_AFFINE = 5 };
enum snf_act { SNF_NONE = 0, SNF_RELU = 1, SNF_RELU6 = 2 };
#define SNF_INPUT (-1)  /* value offset meaning "the model input" */

typedef struct {
  int kind;
  int in_h, in_w, out_h, out_w;   /* spatial sizes (1 for dense) */
  int kh, kw, sh, sw;             /* window and strides */
  int pad_top, pad_left;          /* explicit leading padding */
  int in_full;                    /* full input width: the row stride of conv weights */
  const float *weight;            /* conv [out][kh][kw][in_full]; depthwise [c][kh*kw] */
  const float *bias;              /* [out] or NULL */
  int src, src2, dst;             /* arena offsets in floats (SNF_INPUT: the input) */
  int in_group, out_group;        /* columns of the level table */
  int act;                        /* enum snf_act */
} snf_layer;

typedef struct {                  /* a level's per-channel affine of one step (or NULLs) */
  const float *scale, *shift;
} snf_affine;

typedef struct {                  /* what a level switch writes, per step */
  int in_c, out_c;
  snf_affine affine;
} snf_active;

typedef struct {
  int num_layers, num_groups, num_levels;
  const snf_layer *layers;
  const int *widths;              /* [num_levels][num_groups] */
  const snf_affine *affine;       /* [num_levels][num_layers] */
  snf_active *active;             /* [num_layers] */
  float *arena;
} snf_model;

/* Make `level` active: O(num_layers) writes, no weight is moved. 0, or -1 if out of range
 * (the active level is then unchanged). */
int snf_set_level(const snf_model *m, int level);

/* One example: `input` in the model's input layout (H x W x C), `output` gets the logits. */
void snf_run(const snf_model *m, const float *input, float *output);

#ifdef __cplusplus
}
#endif

#endif /* SUBNETS_SNF_H_ */
