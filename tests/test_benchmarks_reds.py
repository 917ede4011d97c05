"""Smoke tests of the REDS benchmarks' --quick modes: each prints one JSON object last."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_reds_quick(tmp_path):
    png = tmp_path / "reds.png"
    out = _run("reds.py", "--out", str(png))
    assert out["benchmark"] == "reds" and out["quick"] is True
    assert set(out["results"]) == {"taylor", "l1", "l1_bn", "random", "l1_knapsack",
                                   "taylor_top_down", "scratch"}
    assert isinstance(out["taylor_ge_l1_bn_ge_random_at_smallest"], bool)
    # the order ablation runs at exactly the widths REDS chose
    for name in ("l1", "l1_bn", "random", "scratch"):
        assert [lv["widths"] for lv in out["results"][name]] == \
            [lv["widths"] for lv in out["results"]["taylor"]], name
    for name, levels in out["results"].items():
        fractions = [lv["macs_fraction"] for lv in levels]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0, name
        for lv in levels:
            assert 0.0 <= lv["accuracy"] <= 1.0
            assert lv["macs_fraction"] <= lv["budget"] + 1e-9
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # trains cPreResNet20 on 512 digits, two seeds x three variants
def test_reds_quick_residual_widths_two_seeds(tmp_path):
    png = tmp_path / "reds_resnet.png"
    out = _run("reds.py", "--model", "cpreresnet20", "--data", "digits", "--seeds", "0,1",
               "--out", str(png))
    assert out["model"] == "cpreresnet20" and out["seeds"] == [0, 1]
    assert set(out["mean"]) == {"taylor", "uniform", "scratch"}
    assert len(out["per_seed"]) == 2
    for name, levels in out["mean"].items():
        assert [lv["budget"] for lv in levels] == [0.25, 0.5, 1.0], name
        for lv in levels:
            assert lv["macs_fraction"] <= lv["budget"] + 1e-9
            assert 0.0 <= lv["accuracy"] <= 1.0 and lv["accuracy_std"] >= 0.0
    # the knapsack and scratch levels share widths; uniform widths differ from the knapsack's
    for run in out["per_seed"]:
        assert [lv["widths"] for lv in run["scratch"]] == [lv["widths"] for lv in run["taylor"]]
        widths = run["uniform"][0]["widths"]
        assert len({round(widths[g] / run["uniform"][-1]["widths"][g], 1) for g in widths}) <= 2
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_switch_quick():
    out = _run("switch.py")
    assert out["benchmark"] == "switch" and out["levels"] == 4
    assert out["switch"]["median_us"] > 0 and out["switch"]["n"] == 50
    # The point of the family: one weight set, far less than separate copies of every level.
    assert out["memory_bytes"] < out["separate_copies_bytes"]
    assert [lv["macs_fraction"] for lv in out["per_level"]][-1] == 1.0
