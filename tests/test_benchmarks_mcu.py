"""benchmarks/mcu.py --quick: runs, and its JSON says what it measured."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or
                    shutil.which("qemu-system-arm") is None, reason="needs cross tools")
def test_mcu_benchmark_quick():
    path = Path(__file__).parents[1] / "benchmarks" / "mcu.py"
    spec = importlib.util.spec_from_file_location("bench_mcu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--quick"])
    assert out["levels"] == 4 and out["bit_exact_levels"] == 4
    assert out["switch_bytes_moved"] == 0
    assert out["flash_ratio_vs_largest_level"] <= 1.05
    assert out["instructions_per_mac_m4"] < out["instructions_per_mac_m0plus"]
