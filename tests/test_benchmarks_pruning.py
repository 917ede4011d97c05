"""The pruning benchmarks' --quick modes run and report what they claim to measure.

Each quick run trains and compiles several models in a fresh process (~10-30 s on an idle
2-core machine); they run in the default suite, as every benchmark's --quick mode must.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script, tmp_path):
    png = tmp_path / f"{script}.png"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--quick",
                           "--out", str(png)], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert png.stat().st_size > 1000
    return result


def test_shifter_quick(tmp_path):
    r = _run("shifter", tmp_path)
    assert r["benchmark"] == "shifter" and r["accuracy_equal_all_levels"]
    rows = r["levels"]
    assert [row["density"] for row in rows] == sorted((row["density"] for row in rows),
                                                      reverse=True)
    for row in rows:
        assert row["params_after"] <= row["params_before"]
        for kind in ("dense", "sparse", "removed"):
            assert row[f"latency_{kind}_b1_ms"] > 0 and row[f"latency_{kind}_b64_ms"] > 0
    sw = r["switching"]
    # Pruned variants deflate; the active one is held inflated on top of the blobs.
    assert sw["portfolio_compressed_bytes"] < sw["all_loaded_memory_bytes"]
    assert sw["portfolio_memory_bytes"] <= sw["portfolio_compressed_bytes"] + max(
        row["bytes_after"] for row in rows) + 4096  # + container/header bookkeeping
    assert sw["portfolio_switch_us"] > 0


def test_reconvene_quick(tmp_path):
    r = _run("reconvene", tmp_path)
    methods = {row["method"]: row for row in r["rows"]}
    assert set(methods) == {"unstructured", "structured", "reconvene"}
    for row in r["rows"]:
        assert row["accuracy_sparse"] == row["accuracy_removed"]
    # Rectified layers are physically narrower: fewer stored parameters than unstructured PaI.
    assert methods["reconvene"]["params_after"] < methods["unstructured"]["params_after"]
    (key,) = r["summary"]
    assert r["summary"][key]["size_vs_unstructured_stored"] > 1


@pytest.mark.slow
@pytest.mark.parametrize("script", ["shifter", "reconvene"])
def test_sweep_quick_reports_floor_on_and_off(tmp_path, script):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--quick",
                           "--sweep", "--out", str(tmp_path / "s.png")], capture_output=True,
                          text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {r["guard"] for r in out["rows"]} == {True, False}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in out["rows"])
    assert (tmp_path / "s.png").stat().st_size > 0
