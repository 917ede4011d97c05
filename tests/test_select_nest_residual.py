"""``subnets nest --model cpreresnet20``: a residual network end to end (exact graph knapsack)."""

from __future__ import annotations

import json

import pytest

from subnets import cost
from subnets.cli import main
from subnets.runtime.family import Family


@pytest.mark.slow  # trains cPreResNet20 on 128 digits for one epoch (~1-4 min on a shared CPU)
def test_nest_cpreresnet20_end_to_end(tmp_path):
    out = tmp_path / "run"
    assert main(["nest", "--model", "cpreresnet20", "--data", "digits", "--budgets",
                 "0.25,0.5", "--out", str(out), "--limit", "128", "--batch-size", "64",
                 "--epochs", "1", "--finetune-epochs", "1", "--score-batches", "1",
                 "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    levels = metrics["levels"]
    assert [lv["budget"] for lv in levels] == [0.25, 0.5, 1.0]
    fam = Family.load(out / "family.subnets")
    full = cost.macs(fam.net)
    assert fam.levels == [lv["widths"] for lv in levels]
    assert fam.levels[-1] == fam.net.graph.full_widths()
    for lv in levels:
        assert lv["macs"] == cost.macs(fam.net, lv["widths"]) <= lv["budget"] * full
        assert 0.0 <= lv["accuracy"] <= 1.0
    # nested: the residual streams and every block's inner groups
    for a, b in zip(fam.levels, fam.levels[1:], strict=False):
        assert all(a[g] <= b[g] for g in a)
    # the smallest level really narrows the stream groups shared by the residual blocks
    assert fam.levels[0]["s2"] < fam.levels[-1]["s2"]
