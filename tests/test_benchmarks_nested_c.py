"""benchmarks/nested_c.py --quick runs and ends with one JSON object."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc")
def test_nested_c_benchmark_quick():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "nested_c.py"), "--quick"],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "nested_c" and result["quick"]
    levels = result["per_level"]
    assert len(levels) == result["levels"] >= 2
    assert all(lv["max_abs_diff"] < 1e-4 for lv in levels)
    assert levels[0]["macs"] < levels[-1]["macs"]
    assert levels[0]["run_us"] < levels[-1]["run_us"]
    assert result["separate_copies_bytes"] > result["artifact_bytes"]
    if result["cortex_m4"] is not None:
        assert result["cortex_m4"]["flash_bytes"] >= result["artifact_bytes"]
