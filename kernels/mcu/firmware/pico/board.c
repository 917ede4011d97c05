/* Raspberry Pi Pico UART0 on GP0 (TX) / GP1 (RX), 115200 8N1 (RP2040 datasheet, Sec. 2.14,
 * 2.15, 4.2). Assumes clk_sys = 48 MHz as the USB bootrom leaves it; clk_peri is fed from it. */
#include <stdint.h>

#define R(addr) (*(volatile uint32_t *)(addr))
#define RESETS 0x4000C000u
#define CLK_PERI_CTRL 0x40008048u
#define IO_BANK0 0x40014000u
#define UART0 0x40034000u

void board_init(void) {
  const uint32_t bits = (1u << 22) | (1u << 5) | (1u << 8); /* uart0, io_bank0, pads_bank0 */
  R(CLK_PERI_CTRL) = 1u << 11;                                /* enable, AUXSRC = clk_sys */
  R(RESETS + 0x3000u) = bits;                                 /* atomic clear: out of reset */
  while ((R(RESETS + 0x8u) & bits) != bits) {}
  R(IO_BANK0 + 0x04u) = 2u; /* GPIO0_CTRL FUNCSEL = UART */
  R(IO_BANK0 + 0x0Cu) = 2u; /* GPIO1_CTRL */
  R(UART0 + 0x24u) = 26u;   /* IBRD: 48 MHz / (16 * 115200) = 26.04 */
  R(UART0 + 0x28u) = 3u;    /* FBRD */
  R(UART0 + 0x2Cu) = 0x70u; /* LCR_H: 8 bits, FIFOs */
  R(UART0 + 0x30u) = 0x301u;/* CR: enable, TX, RX */
}

int board_getc(void) {
  while (R(UART0 + 0x18u) & (1u << 4)) {} /* RXFE */
  return (int)(R(UART0) & 0xFFu);
}

void board_putc(char c) {
  while (R(UART0 + 0x18u) & (1u << 5)) {} /* TXFF */
  R(UART0) = (uint8_t)c;
}
