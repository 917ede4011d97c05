/* Board firmware: read one example over the UART, pick a level, run it, print the class.
 *
 * Protocol (115200 8N1): the host sends one ASCII digit, the level (or 'a': the largest level
 * within MODEL_MAC_BUDGET MACs via subnets_select), then MODEL_INPUT_SIZE raw int8 bytes (the
 * example quantised with MODEL_INPUT_SCALE / MODEL_INPUT_ZERO_POINT). The board answers
 * "level L class C\n". Needs board_init / board_getc / board_putc (board.c of each board). */
#include <stdint.h>

#include "model.h"

#ifndef MODEL_MAC_BUDGET
#define MODEL_MAC_BUDGET 1000000UL
#endif

void board_init(void);
int board_getc(void); /* blocking, 0..255 */
void board_putc(char c);

static void puts_(const char *s) {
  while (*s) board_putc(*s++);
}

static void putu(unsigned v) {
  char buf[12];
  int n = 0;
  do buf[n++] = (char)('0' + v % 10u); while ((v /= 10u) != 0u);
  while (n) board_putc(buf[--n]);
}

int main(void) {
  static int8_t input[MODEL_INPUT_SIZE];
  static int8_t out[MODEL_OUTPUT_SIZE];
  board_init();
  puts_("subnets nested int8 ready\n");
  for (;;) {
    const int cmd = board_getc();
    int level = cmd == 'a' ? subnets_select(MODEL_MAC_BUDGET) : cmd - '0';
    if (level < 0) level = 0;
    for (int i = 0; i < MODEL_INPUT_SIZE; ++i) input[i] = (int8_t)board_getc();
    if (model_set_level(level) != 0) {
      puts_("bad level\n");
      continue;
    }
    model_run(input, out);
    int best = 0;
    for (int i = 1; i < MODEL_OUTPUT_SIZE; ++i)
      if (out[i] > out[best]) best = i;
    puts_("level ");
    putu((unsigned)level);
    puts_(" class ");
    putu((unsigned)best);
    board_putc('\n');
  }
}
