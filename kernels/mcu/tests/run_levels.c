/* Host test driver: reads int8 examples from stdin, runs every level, prints the outputs.
 * stdin: a line "n size", then n*size int8 values. stdout: per level and example, one line of
 * the int8 outputs. Build with -DMODEL_H='"model.h"' -DPREFIX=model. */
#include <stdio.h>
#include <stdlib.h>

#include MODEL_H

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define SET_LEVEL CAT(PREFIX, _set_level)
#define RUN CAT(PREFIX, _run)

int main(void) {
  int n = 0, size = 0;
  if (scanf("%d %d", &n, &size) != 2 || n < 1 || size < 1 || size > 65536) return 2;
  static int8_t input[65536];
  static int8_t output[4096];
  int8_t *all = malloc((size_t)n * (size_t)size);
  if (!all) return 3;
  for (long i = 0; i < (long)n * size; ++i) {
    int v = 0;
    if (scanf("%d", &v) != 1) return 4;
    all[i] = (int8_t)v;
  }
  for (int level = 0; level < NUM_LEVELS; ++level) {
    if (SET_LEVEL(level) != 0) return 5;
    for (int e = 0; e < n; ++e) {
      for (int i = 0; i < size; ++i) input[i] = all[(long)e * size + i];
      RUN(input, output);
      for (int i = 0; i < OUTPUT_SIZE; ++i) printf("%d ", output[i]);
      printf("\n");
    }
  }
  free(all);
  return 0;
}
