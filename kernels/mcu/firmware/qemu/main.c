/* Emulated benchmark/firmware: for each level, switch, run every built-in example, print the
 * classes and the CMSDK timer ticks of one switch and of the inferences (under `-icount
 * shift=0` one instruction is 1 ns of virtual time; the timer runs at 25 MHz: 40 instructions
 * per tick). Expects model.h / model.c and examples.h (EXAMPLES[N][size]) next to it: int8 for
 * the int8 artifact, float with -DSUBNETS_FLOAT for the float32 one (nested_c(int8=False)). */
#include <stdint.h>
#include <stdio.h>

#include "model.h"
#include "examples.h"

#ifdef SUBNETS_FLOAT
typedef float out_t;
#else
typedef int8_t out_t;
#endif

#define TIMER0 ((volatile uint32_t *)0x40000000u)

static uint32_t ticks(void) { return TIMER0[1]; } /* VALUE, counting down */

#ifdef SNQ_PROFILE
static uint32_t prof[64], prof_last;
void snq_profile(int layer) {
  const uint32_t t = ticks();
  if (layer < 64) prof[layer] += prof_last - t;
  prof_last = ticks();
}
#endif

int main(void) {
  static out_t out[MODEL_OUTPUT_SIZE];
  TIMER0[0] = 0;
  TIMER0[2] = 0xFFFFFFFFu; /* RELOAD */
  TIMER0[1] = 0xFFFFFFFFu;
  TIMER0[0] = 1;           /* enable */
  for (int level = 0; level < MODEL_NUM_LEVELS; ++level) {
    uint32_t t0 = ticks();
    model_set_level(level);
    uint32_t t1 = ticks();
    for (int e = 0; e < NUM_EXAMPLES; ++e) model_run(EXAMPLES[e], out);
    uint32_t t2 = ticks();
    printf("level %d switch_ticks %lu run_ticks %lu classes", level, (unsigned long)(t0 - t1),
           (unsigned long)(t1 - t2));
    for (int e = 0; e < NUM_EXAMPLES; ++e) {
      model_run(EXAMPLES[e], out);
      int best = 0;
      for (int i = 1; i < MODEL_OUTPUT_SIZE; ++i)
        if (out[i] > out[best]) best = i;
      printf(" %d", best);
    }
    printf("\n");
  }
#ifdef SNQ_PROFILE
  for (int l = 0; l < 64; ++l) prof[l] = 0;
  prof_last = ticks();
  model_run(EXAMPLES[0], out);
  for (int l = 0; l < 64 && prof[l]; ++l) printf("layer %d ticks %lu\n", l, (unsigned long)prof[l]);
#endif
  return 0;
}
