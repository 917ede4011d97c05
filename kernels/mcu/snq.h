/* snq: a C99 int8 interpreter for nested (REDS) networks whose levels share their weights.
 *
 * Quantisation is TFLite-Micro's: per-channel symmetric int8 weights (zero point 0), int32
 * biases, int8 activations with a scale and zero point, and fixed-point requantisation with
 * MultiplyByQuantizedMultiplier's rounding (SaturatingRoundingDoublingHighMul followed by
 * RoundingDivideByPOT), so each level's output equals TFLite-Micro's reference kernels on the
 * same quantised level, bit for bit.
 *
 * Weights are stored once: conv row `o` is [kh][kw][in_full] for the FULL input width
 * (output-unit-major), depthwise weights are [kh*kw][in_full] (tap-major). A level keeps the
 * first `out_c` rows and the first `in_c` inputs of each tap (a fixed-stride view), so a level switch writes widths and per-level requantisation
 * pointers only; no weight byte moves. Activations are H x W x C (channels last) at the active
 * width in one static arena whose value offsets the generator computed for the full level.
 * No malloc, no libm, no globals here.
 *
 * On targets with the Armv7E-M DSP extension (__ARM_FEATURE_DSP: Cortex-M4/M7/M33) the dot
 * products use dual 16-bit MACs (__smlad, __sxtb16); elsewhere plain C.
 *
 * References: Jacob et al., CVPR 2018 (integer-only inference); David et al., TensorFlow Lite
 * Micro (MLSys 2021); Corti et al., REDS (arXiv:2311.13349), Sec. 3.1 and 5.
 */
#ifndef SNQ_H_
#define SNQ_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum snq_kind {
  SNQ_CONV = 0,      /* conv and dense (a 1x1 conv on a 1x1 map) */
  SNQ_DEPTHWISE = 1, /* one kh x kw filter per channel; in and out widths are equal */
  SNQ_AVGPOOL = 2,   /* window average, TFLite's rounding; same scale in and out */
  SNQ_MAXPOOL = 3,   /* window maximum; same scale in and out */
  SNQ_ADD = 4        /* elementwise sum of two values, TFLite's ADD requantisation */
};

#define SNQ_INPUT (-1) /* value offset meaning "the model input" */

typedef struct {
  int32_t kind;
  int32_t in_h, in_w, out_h, out_w; /* spatial sizes (1 for dense) */
  int32_t kh, kw, sh, sw;           /* window and strides */
  int32_t pad_top, pad_left;        /* explicit leading padding */
  int32_t in_full;                  /* full input width: the weight row stride per tap */
  const int8_t *weight;             /* conv [out][kh][kw][in_full]; depthwise [kh*kw][in_full] */
  int32_t src, src2, dst;           /* arena offsets (SNQ_INPUT: the input); src2 for ADD */
  int32_t in_group, out_group;      /* columns of the level table */
  int32_t in_zp, in2_zp, out_zp;    /* activation zero points */
  int32_t act_min, act_max;         /* fused ReLU / ReLU6 clamp, already in output units */
  /* ADD only: TFLite's left shift 20 and three multipliers (shifts <= 0). */
  int32_t in1_mult, in1_shift, in2_mult, in2_shift, out_mult, out_shift;
} snq_layer;

typedef struct {         /* what a level switch writes, per layer */
  int32_t in_c, out_c;
  const int32_t *mult;   /* [out_c] multiplier; negative: negate the product sum first */
  const int8_t *shift;   /* [out_c] TFLite shift (> 0 left, < 0 right) */
  const int32_t *bias;   /* [out_c] */
} snq_active;

typedef struct {         /* one level's requantisation tables, per layer (NULL for pools) */
  const int32_t *mult;
  const int8_t *shift;
  const int32_t *bias;
} snq_tables;

typedef struct {
  int32_t num_layers, num_groups, num_levels;
  const snq_layer *layers;
  const int32_t *widths;   /* [num_levels][num_groups] */
  const snq_tables *tables;/* [num_levels][num_layers] */
  snq_active *active;      /* [num_layers] */
  int8_t *arena;           /* activations */
  int16_t *scratch;        /* im2col row for one output position: max kh*kw*in_full */
} snq_model;

/* Make `level` active: O(num_layers) writes, no weight moves. Returns 0, or -1 if out of
 * range (the active level is then unchanged). */
int snq_set_level(const snq_model *m, int level);

/* One example. `input` in the model's input layout (int8, the input zero point and scale);
 * `output` gets the last layer's int8 values (the logits). */
void snq_run(const snq_model *m, const int8_t *input, int8_t *output);

#ifdef SNQ_PROFILE
void snq_profile(int layer); /* supplied by the application */
#endif

/* Index of the first largest of n values (the predicted class). */
int snq_argmax(const int8_t *x, int n);

/* TFLite's MultiplyByQuantizedMultiplier (exposed for tests). */
int32_t snq_requant(int32_t x, int32_t multiplier, int shift);
int32_t snq_srdhm(int32_t a, int32_t b);
int32_t snq_rdbpot(int32_t x, int exponent);
/* The kernels' faster form of snq_requant (equal for multipliers in [2^30, 2^31)). */
int32_t snq_requant_kernel(int32_t x, int32_t multiplier, int shift);

#ifdef __cplusplus
}
#endif

#endif /* SNQ_H_ */
