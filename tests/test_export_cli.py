"""`subnets export RUN_DIR --board ... --out DIR` on a real saved Family."""

from __future__ import annotations

import json

import jax
import pytest

import subnets
from subnets import export
from subnets.cli import main
from subnets.runtime.family import Family

SHAPE = (8, 8, 1)  # the digits data set's inputs


@pytest.fixture()
def run_dir(tmp_path):
    """What `subnets nest --out` writes: family.subnets + metrics.json (here without 'data')."""
    net = subnets.zoo.create("ds-cnn-s", num_classes=4, input_shape=SHAPE)
    fam = Family(net, net.init(jax.random.key(0)), export.uniform_levels(net.graph, [0.25, 1.0]))
    d = tmp_path / "run"
    d.mkdir()
    fam.save(d / "family.subnets")
    (d / "metrics.json").write_text(json.dumps({"levels": 2}))
    return d


def test_missing_run_dir_is_named(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope is not a directory" in capsys.readouterr().err


def test_run_dir_without_family_is_named(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "family.subnets not found" in capsys.readouterr().err


def test_metrics_without_data_set_is_named(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--out", str(tmp_path / "o")]) == 2
    assert "metrics.json names no data set" in capsys.readouterr().err


def test_custom_board_too_small_exits_1_and_says_by_how_much(run_dir, tmp_path, capsys):
    pytest.importorskip("tensorflow")
    out = tmp_path / "o"
    code = main(["export", str(run_dir), "--out", str(out), "--data", "synthetic", "--board",
                 "tiny", "--flash-kb", "30", "--ram-kb", "256", "--representative", "16",
                 "--quiet"])
    text = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    full = manifest["levels"][1]
    assert code == 1 and manifest["levels"][0]["fits"] and not full["fits"]
    assert f"level 1: flash {full['flash_bytes']:,} B exceeds tiny's 30,720 B by " \
           f"{full['flash_bytes'] - 30_720:,} B" in text
    assert (out / "level0.cc").exists() and (out / "level1.tflite").exists()


def test_custom_board_needs_both_numbers(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--out", str(tmp_path / "o"), "--data", "synthetic",
                 "--flash-kb", "30"]) == 2
    assert "--flash-kb and --ram-kb" in capsys.readouterr().err


def test_nested_c_format_writes_int8_calibrated_on_the_recorded_data(run_dir, tmp_path,
                                                                    capsys):
    (run_dir / "metrics.json").write_text(json.dumps({"levels": 2, "data": "digits"}))
    out = tmp_path / "o"
    assert main(["export", str(run_dir), "--out", str(out), "--formats", "nested-c",
                 "--representative", "32"]) == 0
    text = capsys.readouterr().out
    manifest = json.loads((out / "nested_c" / "manifest.json").read_text())
    assert manifest["format"] == "subnets.nested_c.int8" and len(manifest["levels"]) == 2
    assert (out / "nested_c" / "snq.c").exists()
    assert "nested C artifact (int8)" in text
    assert f"share {manifest['weight_bytes'] + manifest['table_bytes']:,} B" in text
    assert not (out / "level0.tflite").exists()
    # the calibration really came from the data: another data set gives other input ranges
    from subnets import data
    from subnets.export.int8 import activation_qparams

    x, _ = data.load("digits", "train")
    assert manifest["input"]["scale"] == pytest.approx(
        activation_qparams(float(x.min()), float(x.max()))[0], rel=1e-6)


def test_nested_c_int8_without_a_recorded_data_set_is_named(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--out", str(tmp_path / "o"), "--formats",
                 "nested-c"]) == 2
    assert "metrics.json names no data set" in capsys.readouterr().err


def test_nested_c_float_needs_no_tensorflow_or_data(run_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["export", str(run_dir), "--out", str(out), "--formats", "nested-c",
                 "--float"]) == 0
    text = capsys.readouterr().out
    manifest = json.loads((out / "nested_c" / "manifest.json").read_text())
    assert len(manifest["levels"]) == 2 and "nested C artifact (float32)" in text
    assert f"share {manifest['weight_bytes'] + manifest['affine_bytes']:,} B" in text
    assert not (out / "level0.tflite").exists()


def test_unknown_format_is_named(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--out", str(tmp_path / "o"), "--formats", "onnx"]) == 2
    assert "onnx" in capsys.readouterr().err


def test_nested_c_board_check_exits_1_and_prints_the_margin(run_dir, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["export", str(run_dir), "--out", str(out), "--formats", "nested-c", "--data",
            "synthetic", "--representative", "8"]
    assert main([*args, "--board", "tiny", "--flash-kb", "24", "--ram-kb", "8"]) == 1
    text = capsys.readouterr().out
    assert "DOES NOT FIT" in text and "reserved" in text
    assert main([*args, "--board", "pico"]) == 0
    assert "margin" in capsys.readouterr().out


def test_data_set_other_than_the_recorded_one_is_an_error(run_dir, tmp_path, capsys):
    (run_dir / "metrics.json").write_text(json.dumps({"levels": 2, "data": "kws-synthetic"}))
    assert main(["export", str(run_dir), "--out", str(tmp_path / "o"), "--data",
                 "digits"]) == 2
    err = capsys.readouterr().err
    assert "digits" in err and "kws-synthetic" in err
