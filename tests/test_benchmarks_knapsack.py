"""benchmarks/knapsack.py --quick: our exact DP against CP-SAT on the same coupled model."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_knapsack_quick_dp_never_below_cpsat(tmp_path):
    png = tmp_path / "knapsack.png"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "knapsack.py"), "--quick",
                        "--out", str(png)], capture_output=True, text=True, timeout=600,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert png.exists()
    cases = []

    def walk(node):
        if isinstance(node, dict):
            if "dp_value" in node:
                cases.append(node)
            for v in node.values():
                walk(v)

    walk(report)
    assert cases, "no (model, budget) case in the report"
    for c in cases:
        assert c["dp_ms"] >= 0
        assert c["dp_true_frac"] <= 1.0
        if c.get("cpsat_value") is not None:
            # The DP is exact: a CP-SAT answer can tie it, never beat it (float scaling slack).
            assert c["dp_value"] >= c["cpsat_value"] - 1e-6 * max(1.0, abs(c["dp_value"]))
        # The reference's full fan-in pricing uses less than the budget it is given.
        assert c["full_fanin_true_frac"] <= c["dp_true_frac"] + 1e-9
