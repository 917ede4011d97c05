/* Nano 33 BLE Sense UART: the nRF52840 UART0 peripheral on the header pins TX = P1.03,
 * RX = P1.10, 115200 8N1 (nRF52840 Product Specification v1.7, Sec. 6.34). */
#include <stdint.h>

#define UART0 0x40002000u
#define REG(off) (*(volatile uint32_t *)(UART0 + (off)))

void board_init(void) {
  REG(0x50C) = 32u + 3u;      /* PSELTXD: P1.03 */
  REG(0x514) = 32u + 10u;     /* PSELRXD: P1.10 */
  REG(0x524) = 0x01D7E000u;   /* BAUDRATE 115200 */
  REG(0x500) = 4u;            /* ENABLE */
  REG(0x000) = 1u;            /* TASKS_STARTRX */
  REG(0x008) = 1u;            /* TASKS_STARTTX */
}

int board_getc(void) {
  while (REG(0x108) == 0u) {} /* EVENTS_RXDRDY */
  REG(0x108) = 0u;
  return (int)(REG(0x518) & 0xFFu);
}

void board_putc(char c) {
  REG(0x11C) = 0u;            /* EVENTS_TXDRDY */
  REG(0x51C) = (uint8_t)c;    /* TXD */
  while (REG(0x11C) == 0u) {}
}
