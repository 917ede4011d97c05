"""Families, portfolios and single models as safetensors files, and the older files still working:
Family.load, load_level and `subnets export` on both formats."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

import subnets
from subnets import export, io
from subnets.cli import main
from subnets.pruning.pipeline import load_level
from subnets.runtime import Portfolio
from subnets.runtime.family import Family

SHAPE = (8, 8, 1)
X = np.random.default_rng(0).normal(size=(3, *SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def family():
    net = subnets.zoo.create("ds-cnn-s", num_classes=4, input_shape=SHAPE)
    v = net.init(jax.random.key(0))
    stats = [jax.tree.map(lambda a, s=s: np.asarray(a) + s, v["batch_stats"]) for s in (1, 0)]
    return Family(net, v, export.uniform_levels(net.graph, [0.25, 1.0]), level_batch_stats=stats)


def _old_family_file(fam: Family, path) -> None:
    """A family file as subnets wrote it before safetensors (family version 2, subnets-v1)."""
    tree = {"variables": fam.variables, "level_batch_stats": fam.level_batch_stats or {}}
    io.save(path, tree, meta={**fam.meta(), "version": 2}, format="subnets-v1")


def _same_outputs(a: Family, b: Family) -> None:
    for i in range(len(a)):
        np.testing.assert_allclose(np.asarray(a.apply(X, i)), np.asarray(b.apply(X, i)),
                                   rtol=1e-5, atol=1e-6)


def test_family_file_is_plain_safetensors(family, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = tmp_path / "family.subnets"
    family.save(path)
    flat = load_file(str(path))
    kernel = next(k for k in flat if k.startswith("params/") and k.endswith("/kernel"))
    first = kernel.split("/")[1]
    np.testing.assert_array_equal(flat[kernel],
                                  np.asarray(family.variables["params"][first]["kernel"]))
    stats = [k for k in flat if k.startswith("level_batch_stats/")]
    assert stats and all(flat[k].shape[0] == 2 for k in stats)  # stacked, one row per level
    with safe_open(str(path), "np") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items() if not k.startswith("subnets.")}
    assert meta["format"] == "subnets.family" and meta["version"] == 3
    assert meta["levels"] == family.levels and meta["level_stats"] is True
    assert meta["graph"] == family.net.graph.to_dict()


@pytest.mark.parametrize("writer", ["safetensors", "subnets-v1", "old", "compressed"])
def test_family_load_reads_every_format(family, tmp_path, writer):
    path = tmp_path / "family.subnets"
    if writer == "old":
        _old_family_file(family, path)
    else:
        family.save(path, compress=writer == "compressed",
                    format="subnets-v1" if writer == "subnets-v1" else "safetensors")
    back = Family.load(path, model=family.net)
    assert back.levels == family.levels
    for a, b in zip(jax.tree.leaves((back.variables, back.level_batch_stats)),
                    jax.tree.leaves((family.variables, family.level_batch_stats)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _same_outputs(back, family)


def test_family_file_damage_names_the_file(family, tmp_path):
    path = tmp_path / "family.subnets"
    family.save(path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(io.FormatError, match=r"family\.subnets: checksum mismatch"):
        Family.load(path)
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(io.FormatError, match=r"family\.subnets: truncated"):
        Family.load(path)


def test_family_refuses_a_reserved_collection_name(family, tmp_path):
    bad = Family.__new__(Family)
    bad.__dict__.update(family.__dict__)
    bad.variables = {**family.variables, "level_batch_stats": {}}
    with pytest.raises(ValueError, match="collection named 'level_batch_stats'"):
        bad.save(tmp_path / "f.subnets")
    assert not (tmp_path / "f.subnets").exists()


@pytest.mark.parametrize("fmt, compress", [("safetensors", False), ("subnets-v1", True)])
def test_single_model_files_load_in_both_formats(family, tmp_path, fmt, compress):
    net = family.net
    v = family.level_variables(0)
    meta = {"graph": net.graph.to_dict(), "input_shape": list(SHAPE), "accuracy": 0.5}
    path = tmp_path / "level_0.subnets"
    io.save(path, v, meta=meta, compress=compress, format=fmt)  # subnets-v1 + DEFLATE: old files
    model, back, m = load_level(path)
    assert m["accuracy"] == 0.5
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(v), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(model.apply(back, X)), np.asarray(family.apply(X, 0)),
                               rtol=1e-5, atol=1e-6)


def test_portfolio_file_round_trip_through_disk(family, tmp_path):
    p = Portfolio(model=family.net)
    for i in range(len(family)):
        p.add(f"level_{i}", family.level_variables(i), meta={"level": i})
    p.switch("level_1")
    p.save(tmp_path / "portfolio.subnets")
    assert io.format_of((tmp_path / "portfolio.subnets").read_bytes()) == "safetensors"
    back = Portfolio.load(tmp_path / "portfolio.subnets")  # no model: the stored graph runs
    assert back.active == "level_1" and back.meta("level_0") == {"level": 0}
    np.testing.assert_allclose(np.asarray(back.apply(X, "level_0")),
                               np.asarray(family.net.apply(family.level_variables(0), X)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("writer", ["safetensors", "old"])
def test_cli_export_reads_both_family_formats(family, tmp_path, writer, capsys):
    run = tmp_path / "run"
    run.mkdir()
    if writer == "old":
        _old_family_file(family, run / "family.subnets")
    else:
        family.save(run / "family.subnets")
    (run / "metrics.json").write_text(json.dumps({"levels": 2}))
    out = tmp_path / "out"
    assert main(["export", str(run), "--out", str(out), "--formats", "nested-c", "--float"]) == 0
    capsys.readouterr()
    manifest = json.loads((out / "nested_c" / "manifest.json").read_text())
    assert len(manifest["levels"]) == 2
    reference = tmp_path / "reference"
    export.nested_c(family, reference, int8=False)
    assert manifest["levels"] == json.loads((reference / "manifest.json").read_text())["levels"]


OLD = Path(__file__).parent / "data" / "old_files"  # written by fa79d4e (make_old_files.py)


def test_files_written_by_the_previous_version_still_load():
    expected = json.loads((OLD / "expected.json").read_text())
    x = np.asarray(expected["x"], np.float32)
    for name in ("family.subnets", "portfolio.subnets", "level_0.subnets"):
        assert io.format_of((OLD / name).read_bytes()) == "subnets-v1"
    fam = Family.load(OLD / "family.subnets")  # no model: the stored graph runs
    assert fam.levels == expected["levels"] and fam.level_batch_stats is not None
    for i, logits in enumerate(expected["family"]):
        np.testing.assert_allclose(np.asarray(fam.apply(x, i)), logits, rtol=1e-5, atol=1e-5)
    assert io.load(OLD / "family.subnets")[1]["extra"] == {"note": "fa79d4e"}

    p = Portfolio.load(OLD / "portfolio.subnets")
    assert p.names == ("level_0", "level_1") and p.active == "level_0"
    for i in range(2):
        assert p.meta(f"level_{i}") == {"level": i}
        np.testing.assert_allclose(np.asarray(p.apply(x, f"level_{i}")),
                                   np.asarray(fam.net.apply(fam.level_variables(i), x)),
                                   rtol=1e-5, atol=1e-5)
    model, v, meta = load_level(OLD / "level_0.subnets")
    assert meta["accuracy"] == 0.5
    np.testing.assert_allclose(np.asarray(model.apply(v, x)),
                               np.asarray(fam.net.apply(fam.level_variables(0), x)),
                               rtol=1e-5, atol=1e-5)


def test_old_files_resaved_are_safetensors_and_equal(tmp_path):
    fam = Family.load(OLD / "family.subnets")
    fam.save(tmp_path / "family.subnets")
    again = Family.load(tmp_path / "family.subnets")
    assert io.format_of((tmp_path / "family.subnets").read_bytes()) == "safetensors"
    for a, b in zip(jax.tree.leaves((fam.variables, fam.level_batch_stats)),
                    jax.tree.leaves((again.variables, again.level_batch_stats)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    p = Portfolio.load(OLD / "portfolio.subnets")
    p.save(tmp_path / "portfolio.subnets")
    q = Portfolio.load(tmp_path / "portfolio.subnets")
    assert io.format_of((tmp_path / "portfolio.subnets").read_bytes()) == "safetensors"
    for name in p.names:
        for a, b in zip(jax.tree.leaves(p.switch(name)), jax.tree.leaves(q.switch(name)),
                        strict=True):
            np.testing.assert_array_equal(a, b)
