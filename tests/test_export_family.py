"""export_family: files, manifest, shrinking levels, board budgets (with a stand-in family)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import subnets
from subnets import export
from subnets.export import BOARDS, Board

SHAPE = (16, 8, 1)


def test_boards_and_budget_messages():
    assert BOARDS["nano33ble"] == Board("nano33ble", 1024 * 1024, 256 * 1024)
    assert BOARDS["pico"] == Board("pico", 2 * 1024 * 1024, 264 * 1024)
    b = Board("tiny", 1000, 500)
    assert b.problems(1000, 500) == []
    flash, ram = b.problems(1234, 777, "level 2")
    assert "level 2" in flash and "by 234 B" in flash
    assert "by 277 B" in ram
    with pytest.raises(ValueError, match="unknown board 'uno'"):
        export.get_board("uno")
    with pytest.raises(ValueError, match="ram_bytes"):
        Board("bad", 10, 0)


def test_uniform_levels_are_nested():
    net = subnets.zoo.create("ds-cnn-s", num_classes=5, input_shape=SHAPE)
    levels = export.uniform_levels(net.graph, [1.0, 0.25, 0.5])
    assert [lv["g0"] for lv in levels] == [16, 32, 64]
    with pytest.raises(ValueError, match="fractions"):
        export.uniform_levels(net.graph, [0.0, 1.0])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("tensorflow")
    pytest.importorskip("tflite_micro")
    net = subnets.zoo.create("ds-cnn-s", num_classes=5, input_shape=SHAPE)
    fam = export.SlicedLevels(net, net.init(jax.random.key(0)),
                              tuple(export.uniform_levels(net.graph, [0.25, 1.0])))
    x = np.asarray(jax.random.uniform(jax.random.key(1), (48,) + SHAPE))
    y = np.arange(48) % 5
    out = tmp_path_factory.mktemp("export")
    # Arenas (shapes only, not weights, set them): small level ~6 KB, full ~12 KB.
    board = Board("mid", 1 << 20, 9_000)
    manifest = export.export_family(fam, out, representative=x[:32], eval_data=(x, y),
                                    board=board, progress=False)
    return fam, out, manifest


def test_files_and_manifest(exported):
    fam, out, manifest = exported
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["model"] == "ds-cnn-s" and manifest["input_shape"] == list(SHAPE)
    for i, entry in enumerate(manifest["levels"]):
        model = (out / entry["tflite"]).read_bytes()
        assert len(model) == entry["flash_bytes"]
        assert f"unsigned int level{i}_len = {len(model)};" in (out / entry["c_source"]).read_text()
        assert (out / entry["c_header"]).exists()
        assert entry["widths"] == fam.levels[i]
        assert entry["macs"] == subnets.cost.macs(fam.net, fam.levels[i])
        assert entry["params"] == subnets.cost.params(fam.net, fam.levels[i])
        ev = entry["eval"]
        assert ev["samples"] == 48 and 0 <= ev["top1_agreement"] <= 1
        assert ev["accuracy_drop"] == pytest.approx(ev["jax_float_accuracy"] - ev["tflm_accuracy"])


def test_levels_shrink_and_budget_says_by_how_much(exported):
    _, _, manifest = exported
    small, full = manifest["levels"]
    assert small["flash_bytes"] < full["flash_bytes"]
    assert small["arena_bytes"] < full["arena_bytes"]
    assert small["macs"] < full["macs"]
    assert small["fits"] and not full["fits"]
    over = full["arena_bytes"] - 9_000
    assert manifest["problems"] == [f"level 1: arena {full['arena_bytes']:,} B exceeds mid's "
                                    f"RAM 9,000 B by {over:,} B"]
    assert not manifest["fits"]
    assert manifest["all_levels_flash_bytes"] == small["flash_bytes"] + full["flash_bytes"]
