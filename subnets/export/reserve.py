"""What a board keeps for itself besides the model: runtime code, stack, OS, per board.

A fit check compares the model's bytes with the board's flash and RAM minus these reserves and
prints the margin. The numbers (bytes) and where they come from:

- ``snq_code`` (flash): the int8 runtime ``kernels/mcu/snq.c`` built with ``-O3``, measured with
  ``arm-none-eabi-size``: 6,268 B for Cortex-M4, 4,040 B for Cortex-M0+; reserved 8 KiB, which
  also covers the generated layer table and level table.
- ``tflm_code`` (flash): TFLite-Micro's interpreter, flatbuffer reader and the int8 reference
  kernels of a CONV/DEPTHWISE/FC/POOL/ADD/RESHAPE/SOFTMAX op resolver: 96 KiB (TFLM reports
  ~80-100 KB for such builds; David et al., MLSys 2021, Table 2 lists 37 KB for the interpreter
  alone plus the kernels).
- ``stack`` (RAM): 4 KiB (the runtime's deepest call chain uses < 300 B; the rest is for the
  application and interrupts).
- ``system`` (flash, RAM): the board's bootloader and OS/SDK. Nano 33 BLE Sense: the Arduino
  bootloader keeps 64 KiB of flash; the Arduino mbed-OS core of an empty sketch takes ~80 KB
  flash and ~45 KB RAM: reserved 160 KiB flash, 48 KiB RAM. Raspberry Pi Pico: a bare
  pico-sdk program (boot2, runtime, UART stdio) ~16 KiB flash, 8 KiB RAM. Custom boards:
  nothing (pass numbers net of your OS).

Example:
    >>> from subnets.export.reserve import reserve
    >>> reserve("pico", "nested-c")
    {'flash_bytes': 24576, 'ram_bytes': 12288}

References:
    David et al., TensorFlow Lite Micro (MLSys 2021); Arduino Nano 33 BLE Sense and Raspberry Pi
    Pico data sheets.
"""

from __future__ import annotations

from typing import Any

KIB = 1024
CODE = {"nested-c": 8 * KIB, "tflite": 96 * KIB}
STACK = 4 * KIB
SYSTEM = {"nano33ble": (160 * KIB, 48 * KIB), "pico": (16 * KIB, 8 * KIB)}


def reserve(board: str, artifact: str) -> dict:
    """Flash and RAM bytes kept back on ``board`` for an ``artifact`` (``"nested-c"`` or
    ``"tflite"``)."""
    if artifact not in CODE:
        raise ValueError(f"artifact must be one of {sorted(CODE)}, got {artifact!r}")
    flash, ram = SYSTEM.get(board, (0, 0))
    return {"flash_bytes": flash + CODE[artifact], "ram_bytes": ram + STACK}


def check(board: Any, artifact: str, flash: int, ram: int) -> dict:
    """Margins of ``flash`` / ``ram`` model bytes on ``board`` after the reserves; ``fits`` and
    ``problems`` (each naming the budget and by how many bytes it is exceeded)."""
    r = reserve(board.name, artifact)
    free_flash, free_ram = board.flash_bytes - r["flash_bytes"], board.ram_bytes - r["ram_bytes"]
    out = {"board": board.name, "artifact": artifact, "reserved": r, "flash_bytes": int(flash),
           "ram_bytes": int(ram), "flash_margin": int(free_flash - flash),
           "ram_margin": int(free_ram - ram), "problems": []}
    for what, need, free, total in (("flash", flash, free_flash, board.flash_bytes),
                                    ("RAM", ram, free_ram, board.ram_bytes)):
        if need > free:
            out["problems"].append(
                f"{artifact}: {what} {need:,} B exceeds {board.name}'s {total:,} B minus "
                f"{total - free:,} B reserved (runtime, stack, OS) by {need - free:,} B")
    out["fits"] = not out["problems"]
    return out
