"""Cross-build the int8 artifact's emulation firmware and run it under QEMU.

``build(out_dir, examples, cpu)`` compiles ``kernels/mcu/firmware/qemu`` (vector table,
linker map, a main that switches every level, runs built-in examples and prints classes and
timer ticks) with ``arm-none-eabi-gcc`` for ``"m4"`` (``-mcpu=cortex-m4``, DSP) or ``"m0plus"``
(``-mcpu=cortex-m0plus``, no DSP: run on the Cortex-M3 ``mps2-an385`` board, which executes
Armv6-M code); ``run`` boots it with ``-icount shift=0`` (1 instruction = 1 ns of virtual
time; the board's CMSDK timer ticks at 25 MHz, so one tick is 40 instructions).

Example:
    >>> from subnets.export.firmware import CPUS
    >>> sorted(CPUS)
    ['m0plus', 'm4']

References:
    Arm, Cortex-M4 / Cortex-M0+ Technical Reference Manuals; QEMU MPS2 boards (AN385, AN386).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from subnets.export.kernels_dir import mcu_dir

CPUS = {"m4": (["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft"], "mps2-an386"),
        "m0plus": (["-mcpu=cortex-m0plus", "-mthumb"], "mps2-an385")}
BOARDS = {  # board firmware: compiler flags, folder, linker script, extra sources
    "nano33ble": (["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
                  "nano33ble", "nrf52840.ld", ("board.c",)),
    "pico": (["-mcpu=cortex-m0plus", "-mthumb"], "pico", "rp2040_ram.ld",
             ("board.c", "entry.c")),
}
INSTRUCTIONS_PER_TICK = 40  # 1 ns per instruction (icount shift=0) / 25 MHz timer


def build(out_dir: str | Path, examples: np.ndarray, cpu: str = "m4", *,
          float32: bool = False) -> Path:
    """ELF of the firmware for ``cpu`` around the artifact in ``out_dir`` (named ``model``);
    ``float32``: the float artifact (``nested_c(..., int8=False)``), hard float on the M4F."""
    out = Path(out_dir)
    flags, _ = CPUS[cpu]
    ctype = "float" if float32 else "int8_t"
    ex = np.asarray(examples, np.float32 if float32 else np.int8).reshape(len(examples), -1)
    fmt = (lambda v: f"{v:.8e}f") if float32 else str
    rows = ",\n".join("  {" + ", ".join(map(fmt, r)) + "}" for r in ex.tolist())
    (out / "examples.h").write_text(
        f"#define NUM_EXAMPLES {len(ex)}\nstatic const {ctype} EXAMPLES[{len(ex)}]"
        f"[{ex.shape[1]}] = {{\n{rows}\n}};\n")
    fw = mcu_dir() / "firmware" / "qemu"
    if float32:
        if cpu == "m4":
            flags = [f for f in flags if "float-abi" not in f] + ["-mfloat-abi=hard",
                                                                  "-mfpu=fpv4-sp-d16"]
        flags = [*flags, "-DSUBNETS_FLOAT"]
        srcs = [fw / "main.c", out / "model.c", out / "snf.c"]
    else:
        srcs = [fw / "main.c", out / "model.c", out / "snq.c"]
    elf = out / f"fw_{cpu}{'_f32' if float32 else ''}.elf"
    subprocess.run([shutil.which("arm-none-eabi-gcc") or "arm-none-eabi-gcc", *flags, "-O3",
                    "-std=c99", "-Wall", "-Wextra", "-Werror", "--specs=rdimon.specs",
                    f"-T{fw / 'mps2.ld'}", f"-I{out}", str(fw / "startup.c"), *map(str, srcs),
                    "-o", str(elf)], check=True, capture_output=True, text=True)
    return elf


def build_board(out_dir: str | Path, board: str) -> dict:
    """Cross-build the UART firmware of ``board`` (``"nano33ble"`` or ``"pico"``) around the
    artifact in ``out_dir``; returns ``elf``, ``flash_bytes`` (text + data) and ``ram_bytes``
    (data + bss, without the stack) as ``arm-none-eabi-size`` reports them."""
    out = Path(out_dir)
    flags, folder, script, extra = BOARDS[board]
    fw = mcu_dir() / "firmware"
    elf = out / f"fw_{board}.elf"
    srcs = [fw / "common" / "startup_cm.c", fw / "common" / "main_board.c",
            *[fw / folder / f for f in extra], out / "model.c", out / "snq.c"]
    subprocess.run(["arm-none-eabi-gcc", *flags, "-O3", "-std=c99", "-Wall", "-Wextra",
                    "-Werror", "-ffunction-sections", "-fdata-sections", "-nostartfiles",
                    "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections",
                    f"-T{fw / folder / script}", f"-I{out}", *map(str, srcs), "-o", str(elf)],
                   check=True, capture_output=True, text=True)
    size = subprocess.run(["arm-none-eabi-size", str(elf)], check=True, capture_output=True,
                          text=True).stdout.split("\n")[1].split()
    text, data, bss = (int(v) for v in size[:3])
    return {"elf": elf, "flash_bytes": text + data, "ram_bytes": data + bss}


def run(elf: str | Path, cpu: str = "m4", timeout: float = 120.0) -> list[dict]:
    """Boot ``elf`` under QEMU; per level ``switch_instructions``, ``run_instructions`` (all
    examples) and ``classes``."""
    _, machine = CPUS[cpu]
    res = subprocess.run(["qemu-system-arm", "-M", machine, "-nographic", "-icount", "shift=0",
                          "-semihosting-config", "enable=on,target=native", "-kernel",
                          str(elf)], capture_output=True, text=True, timeout=timeout)
    levels = []
    for m in re.finditer(r"level (\d+) switch_ticks (\d+) run_ticks (\d+) classes([ \d]*)",
                         res.stdout):
        levels.append({"level": int(m[1]),
                       "switch_instructions": int(m[2]) * INSTRUCTIONS_PER_TICK,
                       "run_instructions": int(m[3]) * INSTRUCTIONS_PER_TICK,
                       "classes": [int(c) for c in m[4].split()]})
    if not levels:
        raise RuntimeError(f"QEMU printed no level lines (rc {res.returncode}): "
                           f"{(res.stdout + res.stderr)[-400:]}")
    return levels
