"""benchmarks/export.py --quick runs and ends with one JSON object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_export_benchmark_quick(tmp_path):
    pytest.importorskip("tensorflow")
    png = tmp_path / "export.png"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "export.py"), "--quick",
                           "--out", str(png)], capture_output=True, text=True, env=env,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "export" and result["quick"]
    (model,) = result["results"]
    small, full = model["levels"]
    assert small["flash_bytes"] < full["flash_bytes"]
    assert small["arena_bytes"] < full["arena_bytes"]
    assert 0 <= small["top1_agreement"] <= 1
    assert png.stat().st_size > 0
