/* RP2040 RAM-image entry at 0x20000000: point VTOR at our vector table, load its stack
 * pointer and jump to its reset handler. */
#include <stdint.h>

extern void (*const snq_vectors[16])(void);

__attribute__((section(".entry"), used, naked)) void pico_entry(void) {
  __asm__ volatile(
      "ldr r0, =snq_vectors\n"
      "ldr r1, =0xE000ED08\n" /* VTOR */
      "str r0, [r1]\n"
      "ldr r1, [r0]\n"
      "mov sp, r1\n"
      "ldr r1, [r0, #4]\n"
      "bx r1\n");
}
