"""Tests for ``subnets subspace``: a tiny run, its outputs, resume, and bad flags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from subnets import subspace
from subnets.cli import main

pytestmark = pytest.mark.usefixtures("fashion_mnist")


def test_cli_trains_saves_reports_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["subspace", "--model", "dnn-s", "--data", "fashion_mnist", "--compression",
            "unstructured", "--kind", "line", "--norm", "none", "--out", str(out),
            "--epochs", "1", "--batch-size", "32", "--limit", "64", "--levels", "unroll",
            "--quiet"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "line" and report["train_examples"] == 64
    assert set(report["accuracy"]) == {str(d) for d in subspace.DEFAULT_LEVELS["unstructured"]}
    assert all(0.0 <= a <= 1.0 for a in report["accuracy"].values())
    s, meta = subspace.load(out / "subspace")
    assert s.kind == "line" and meta["model"] == "dnn-s"
    assert "density 0.025" in capsys.readouterr().out
    # A second call finds the finished checkpoint and does not train again.
    assert main(argv) == 0
    t, _ = subspace.load(out / "subspace")
    np.testing.assert_array_equal(t.end["params"]["dense1"]["kernel"],
                                  s.end["params"]["dense1"]["kernel"])


def test_cli_bad_flags(tmp_path, capsys):
    assert main(["subspace", "--out", str(tmp_path), "--limit", "8"]) == 2
    assert "--limit 8 is smaller than --batch-size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["subspace", "--out", str(tmp_path), "--compression", "lossy"])
