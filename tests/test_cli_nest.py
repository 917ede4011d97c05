"""End-to-end tests of ``subnets nest`` on tiny subsets: files written, levels within budget,
the stored family reproduces the reported accuracies, the base checkpoint is reused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from subnets import checkpoint, cost
from subnets.cli import main
from subnets.nested import pipeline
from subnets.runtime.family import Family

QUICK = ["--limit", "512", "--epochs", "1", "--finetune-epochs", "1", "--batch-size", "64",
         "--score-batches", "2", "--quiet"]


def _check_run(out, budgets):
    metrics = json.loads((out / "metrics.json").read_text())
    levels = metrics["levels"]
    assert [lv["budget"] for lv in levels] == [*sorted(budgets), 1.0]
    assert metrics["data"] == metrics["config"]["data"]
    fam = Family.load(out / "family.subnets")
    assert fam.levels == [lv["widths"] for lv in levels]
    assert fam.levels[-1] == fam.net.graph.full_widths()
    macs = [lv["macs"] for lv in levels]
    assert macs == sorted(macs) and macs[-1] == cost.macs(fam.net)
    for lv in levels[:-1]:
        assert lv["macs"] <= lv["budget"] * macs[-1] + 1e-6
        assert lv["macs"] == cost.macs(fam.net, lv["widths"])
    # The stored family reproduces the reported accuracy of every level.
    cfg = pipeline.NestConfig(**{**metrics["config"], "budgets": tuple(budgets)})
    _, (x, y) = pipeline.load_data(cfg)
    for i, lv in enumerate(levels):
        assert pipeline.accuracy(fam, i, x, y) == pytest.approx(lv["accuracy"])
    assert (out / "accuracy_vs_macs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return metrics


def test_nest_end_to_end_and_reuses_base(tmp_path):
    out = tmp_path / "run"
    args = ["nest", "--model", "dnn-s", "--data", "digits", "--budgets", "0.5,0.25",
            "--out", str(out), *QUICK]
    assert main(args) == 0
    first = _check_run(out, [0.5, 0.25])
    assert first["base"]["loaded"] is False
    assert checkpoint.exists(out / "base")
    assert main([*args, "--score", "l1", "--order", "top_down", "--min-fraction", "0.2"]) == 0
    second = _check_run(out, [0.5, 0.25])
    assert second["base"]["loaded"] is True
    assert second["config"]["min_fraction"] == 0.2
    full = second["levels"][-1]["widths"]
    for lv in second["levels"]:
        assert all(w >= np.ceil(0.2 * full[g]) for g, w in lv["widths"].items())
    assert second["base"]["accuracy"] == pytest.approx(first["base"]["accuracy"])


def test_nest_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["nest", "--budgets", "0.5,abc", "--out", str(tmp_path)])
    assert main(["nest", "--min-fraction", "2", "--out", str(tmp_path), *QUICK]) == 2
    assert "--min-fraction must be in [0, 1]" in capsys.readouterr().err
    assert main(["nest", "--model", "no-such-net", "--out", str(tmp_path), *QUICK]) == 2
    assert "no-such-net" in capsys.readouterr().err


@pytest.mark.slow
def test_nest_ds_cnn_fashion_mnist(tmp_path, fashion_mnist):
    out = tmp_path / "run"
    assert main(["nest", "--model", "ds-cnn-s", "--data", "fashion_mnist", "--budgets",
                 "0.25,0.5,0.75", "--out", str(out), *QUICK]) == 0
    metrics = _check_run(out, [0.25, 0.5, 0.75])
    assert np.all([0.0 <= lv["accuracy"] <= 1.0 for lv in metrics["levels"]])
