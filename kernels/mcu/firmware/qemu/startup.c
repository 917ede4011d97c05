/* Minimal Cortex-M vector table for QEMU: initial stack pointer and reset into newlib's crt0
 * (_start zeroes .bss, sets up semihosting, runs main and exits). */
#include <stdint.h>

extern void _start(void);
extern uint32_t __stack;

void reset_handler(void) {
#if defined(__ARM_FP)
  *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: enable CP10/CP11 (the FPU) */
  __asm__ volatile("dsb\n\tisb");
#endif
  _start();
  for (;;) {}
}
static void fault_handler(void) { for (;;) {} }

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&__stack), reset_handler, fault_handler, fault_handler, fault_handler,
    fault_handler, fault_handler, 0, 0, 0, 0, fault_handler, fault_handler, 0, fault_handler,
    fault_handler};
