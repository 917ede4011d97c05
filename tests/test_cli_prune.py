"""``subnets prune`` end to end on a tiny subset: files, metrics, exact removal, portfolio."""

import json

import numpy as np
import pytest

from subnets import io
from subnets.cli import main
from subnets.pruning.pipeline import PruneConfig, load_level, run_pruning
from subnets.runtime import Portfolio


@pytest.mark.parametrize("method", ["imp", "reconvene"])
def test_cli_writes_levels_metrics_and_portfolio(tmp_path, method, capsys):
    out = tmp_path / method
    rc = main(["prune", "--method", method, "--model", "dnn-s", "--data", "digits",
               "--levels", "1", "--fraction", "0.6", "--density", "0.3,0.1", "--epochs", "2",
               "--batch-size", "64", "--limit", "512", "--lr", "0.01", "--out", str(out),
               "--quiet"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    rows = m["levels"]
    assert len(rows) == 2
    for row in rows:
        # Removal is exact: the same predictions, hence the same accuracy.
        assert row["accuracy_sparse"] == row["accuracy_removed"]
        assert row["params_after"] <= row["params_before"]
        assert row["bytes_after"] <= row["bytes_before"]
        net, v, meta = load_level(out / f"{row['name']}.subnets")
        assert meta["params"] == sum(np.size(a) for a in _leaves(v["params"]))
        assert meta["widths"] == net.graph.widths_of(v)
    dens = [r["density"] for r in rows]
    assert dens == sorted(dens, reverse=True) and dens[-1] < 0.45
    # Sparse training beats chance on digits even in two short epochs.
    assert max(r["accuracy_removed"] for r in rows) > 0.3
    p = Portfolio.load(out / "portfolio.subnets")
    assert set(p.names) == {r["name"] for r in rows}
    last = rows[-1]["name"]
    loaded, _ = io.load(out / f"{last}.subnets")
    for a, b in zip(_leaves(p.switch(last)), _leaves(loaded), strict=True):
        np.testing.assert_array_equal(a, b)


def test_reconvene_level_is_smaller_after_removal_than_before_pruning(tmp_path):
    m = run_pruning(PruneConfig(method="reconvene", model="dnn-s", data="digits",
                                densities=(0.1,), epochs=1, batch_size=64, limit=256,
                                progress=False), tmp_path)
    row = m["levels"][0]
    assert row["params_before"] < 79354 // 2  # rectified layers are physically narrower
    assert row["reconvene"]["params_nonzero"] == row["params_nonzero"]


def test_bad_arguments_are_named(tmp_path, capsys):
    assert main(["prune", "--method", "pai", "--density", "1.5", "--model", "dnn-s",
                 "--data", "digits", "--out", str(tmp_path)]) == 2
    assert "density" in capsys.readouterr().err
    assert main(["prune", "--model", "nope", "--data", "digits", "--limit", "200",
                 "--out", str(tmp_path), "--quiet"]) == 2
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune", "--density", "a,b", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="limit"):
        PruneConfig(limit=10, batch_size=64)


def _leaves(tree):
    out = []
    for k in sorted(tree):
        out.extend(_leaves(tree[k]) if isinstance(tree[k], dict) else [np.asarray(tree[k])])
    return out


def test_cli_table_numbers_levels_and_writes_png_and_record(tmp_path, capsys):
    out = tmp_path / "pai"
    assert main(["prune", "--method", "pai", "--model", "dnn-s", "--data", "digits",
                 "--density", "0.3", "--epochs", "2", "--batch-size", "64", "--limit", "256",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "target" in text and "achieved" in text and "level_1" in text
    row = json.loads((out / "metrics.json").read_text())["levels"][0]
    assert row["name"] == "level_1"  # level_0 is the dense model, for every method
    achieved = float(text.split("level_1")[1].split()[1])
    assert achieved == pytest.approx(row["params_nonzero"] / row["params_before"], abs=1e-4)
    assert (out / "accuracy_vs_macs.png").stat().st_size > 0
    epochs = [json.loads(s)["epoch"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
