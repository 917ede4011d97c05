/* Cortex-M reset for a flash image: copy .data, zero .bss, run main. Symbols from the board's
 * linker script. */
#include <stdint.h>

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
int main(void);

void reset_handler(void) {
#if defined(__ARM_FP)
  *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: enable the FPU (Cortex-M4F) */
  __asm__ volatile("dsb\n\tisb");
#endif
  const uint32_t *src = &__data_load;
  for (uint32_t *dst = &__data_start; dst < &__data_end;) *dst++ = *src++;
  for (uint32_t *dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;
  main();
  for (;;) {}
}

static void default_handler(void) { for (;;) {} }

__attribute__((section(".vectors"), used)) void (*const snq_vectors[16])(void) = {
    (void (*)(void))(&__stack_top), reset_handler, default_handler, default_handler,
    default_handler, default_handler, default_handler, 0, 0, 0, 0, default_handler,
    default_handler, 0, default_handler, default_handler};
