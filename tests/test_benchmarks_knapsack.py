"""Smoke test of benchmarks/knapsack.py --quick: the exact DP is never beaten by CP-SAT."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_knapsack_benchmark_quick(tmp_path):
    png = tmp_path / "knapsack.png"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "knapsack.py"), "--quick",
                           "--out", str(png)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["benchmark"] == "knapsack" and out["violations"] == []
    assert png.stat().st_size > 0
    models = out["results"]["uniform"]
    assert set(models) == {"dnn-s", "cnn-s", "ds-cnn-s"}
    for name, res in models.items():
        G = len(res["groups"])
        rows = res["nested"]
        assert set(rows) == {"0.25", "0.5", "0.75"}
        prev = None
        for frac, r in rows.items():
            assert r["dp_ms"] > 0
            assert r["dp_true_frac"] <= float(frac) * (1 + 1e-9), (name, frac)
            slack = 1e-9 * abs(r["dp_value"])
            if r["cpsat_value"] is not None:
                # The DP is exact: CP-SAT's answer, re-evaluated on the same tables, is no better.
                assert r["dp_value"] >= r["cpsat_value"] - slack, (name, frac)
                assert r["cpsat_true_frac"] <= float(frac) * (1 + 1e-9)
            # CP-SAT's bound holds for the same model up to the rounding of its scaled values.
            assert r["dp_value"] <= r["cpsat_bound"] + G * res["round_unit"] + slack
            if r["cpsat_optimal"]:
                assert abs(r["dp_value"] - r["cpsat_value"]) <= G * res["round_unit"] + slack
            # The full-fan-in answer is feasible for the true cost, so it cannot beat the DP.
            assert r["full_fanin_gap"] >= -1e-9
            assert r["full_fanin_true_frac"] <= float(frac) * (1 + 1e-9)
            if prev is not None:  # bottom-up levels are nested
                assert all(a <= b for a, b in zip(prev, r["dp_widths"], strict=True))
            prev = r["dp_widths"]
    sp = out["speed"]
    assert sp["ds-cnn-l"]["values_agree"]
    assert sp["ds-cnn-l"]["chain_kernel_ms"] > 0 and sp["ds-cnn-l"]["graph_kernel_ms"] > 0
    rn = sp["cpreresnet20"]
    assert rn["solver"] == "graph" and rn["nested"] and rn["select_widths_ms"] > 0
    assert all(f <= b * (1 + 1e-9) for f, b in zip(rn["true_frac"], out["budgets"], strict=True))
