"""benchmarks/train_speed.py --quick runs and reports every figure the issue asks for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_train_speed_quick(tmp_path):
    png = tmp_path / "speed.png"
    env = {**os.environ, "PYTHONPATH": ROOT}
    res = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "train_speed.py"),
                          "--quick", "--out", str(png)], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert png.stat().st_size > 0 and out["sgemm_peak_gflops"] > 0
    lcs = out["lcs"]
    assert set(lcs) == {"lcs_masked_vmap_filed", "lcs_masked_vmap", "lcs_masked_unroll",
                        "lcs_sliced"}
    for row in [*lcs.values(), out["reds_joint"], out["train_full"], out["inference_full"]]:
        for k in ("examples_per_s", "executed_gflop", "useful_gflop", "peak_fraction",
                  "compile_s"):
            assert row[k] >= 0, (row, k)
    # masking runs every level at full width; slicing runs the sampled widths
    assert lcs["lcs_masked_vmap"]["executed_over_useful"] > 1.5
    assert lcs["lcs_sliced"]["executed_over_useful"] <= 1.10
    assert out["reds_joint"]["executed_over_useful"] <= 1.10
    assert out["lcs_auto_step"] == "sliced"
    assert set(out["devices"]) == {"devices_1", "devices_4"}
    head = out["headline"]
    assert head["speedup_vs_filed_default"] == pytest.approx(
        head["default_structured_lcs_examples_per_s"]
        / head["filed_default_vmapped_examples_per_s"], rel=0.01)
    # glibc's defaults map the buffers afresh every call; the library's policy reuses them
    mem = out["host_memory"]
    assert mem["infer_kept"]["minor_faults_per_call"] < mem["infer_glibc"]["minor_faults_per_call"]
    assert mem["train_kept"]["minor_faults_per_call"] < mem["train_glibc"]["minor_faults_per_call"]
    assert out["conv1x1_gemm"]["grad_s_gemm"] > 0
