"""The --quick modes of benchmarks/lcs.py and benchmarks/lcs_throughput.py run and report.

Both compile several training steps (one per method / variant): about 20 s each on an idle
2-core machine, so they run in the default suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_quick(script: str, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT}
    res = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--quick",
                          *extra], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_lcs_throughput_quick():
    out = run_quick("lcs_throughput.py")
    assert out["compilations"]["vmapped"] == 1  # all 4 levels, every step, one program
    assert out["compilations"]["unrolled"] == 1
    assert out["compilations"]["loop"] == 2  # one per-level gradient + one update
    assert out["examples_per_s_vmapped"] > 0 and out["examples_per_s_loop"] > 0
    assert out["examples_per_s_unrolled"] > 0
    inf = out["inference"]
    assert inf["0.25"]["macs"] < inf["1.0"]["macs"]
    assert 0 < out["inference_ratio"]["macs"] < 1


def test_lcs_quick(tmp_path, fashion_mnist):
    png = tmp_path / "lcs.png"
    out = run_quick("lcs.py", "--out", str(png), "--levels", "unroll")
    assert png.stat().st_size > 1000
    assert out["levels"] == "unroll"
    methods = out["methods"]
    assert set(methods) == {"lcs_p", "lcs_l", "sandwich_bn", "discrete", "unstructured_p",
                            "quantized_p"}
    widths = {"1.0", "0.875", "0.75", "0.625", "0.5", "0.375", "0.25"}
    for name in ("lcs_p", "sandwich_bn", "discrete"):
        assert set(methods[name]["accuracy"]) == widths
        assert all(0 <= a <= 1 for a in methods[name]["accuracy"].values())
    assert set(methods["sandwich_bn"]["accuracy_recalibrated"]) == widths
    assert set(methods["quantized_p"]["accuracy"]) == {"8", "7", "6", "5", "4", "3"}
    assert set(out["lcs_p_minus_discrete"]) == widths


@pytest.mark.slow
def test_lcs_width_sweep_quick_covers_16_widths_inside_and_outside(tmp_path):
    png = tmp_path / "w.png"
    out = run_quick("lcs.py", "--width-sweep", "--data", "digits", "--samplings", "sandwich",
                    "--out", str(png))
    per = out["summary"]["sandwich"]
    assert len(per) == 16 and sum(not v["in_range"] for v in per.values()) == 3
    assert all(0.0 <= v["mean"] <= 1.0 for v in per.values())
    assert png.stat().st_size > 0
