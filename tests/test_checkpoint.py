"""Atomic, verified checkpoints: versions, the pointer, kills inside save, damage detection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from subnets import checkpoint
from subnets.checkpoint import CheckpointError


def _tree(v: float) -> dict:
    return {"params": {"w": np.full((4, 3), v, np.float32), "b": np.arange(3, dtype=np.int32)}}


def _state_files(d: Path) -> list[Path]:
    version = d / (d / "latest").read_text().strip()
    return sorted(p for p in (version / "state").rglob("*") if p.is_file())


def test_round_trip_keeps_two_versions_and_a_pointer(tmp_path):
    d = tmp_path / "ck"
    for i in range(4):
        checkpoint.save(d, _tree(float(i)), meta={"epoch": i})
    assert sorted(p.name for p in d.iterdir() if p.is_dir()) == ["v000003", "v000004"]
    assert (d / "latest").read_text().strip() == "v000004"
    tree, meta = checkpoint.restore(d)
    assert meta == {"epoch": 3}
    np.testing.assert_array_equal(tree["params"]["w"], np.full((4, 3), 3.0, np.float32))
    assert checkpoint.exists(d)


def test_exists_is_false_for_empty_half_written_and_foreign_folders(tmp_path):
    assert not checkpoint.exists(tmp_path / "missing")
    (tmp_path / "half" / ".v000001.abcd.tmp" / "state").mkdir(parents=True)
    assert not checkpoint.exists(tmp_path / "half")
    (tmp_path / "v" / "v000001" / "state").mkdir(parents=True)  # no manifest
    assert not checkpoint.exists(tmp_path / "v")
    with pytest.raises(CheckpointError, match="manifest.json: missing"):
        checkpoint.restore(tmp_path / "v")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.restore(tmp_path / "missing")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    d = tmp_path / "ck"
    checkpoint.save(d, _tree(1.0), meta={"epoch": 1})
    with pytest.raises(ValueError, match=r"NaN or infinite.*refusing"):
        checkpoint.save(d, _tree(float("nan")), meta={"epoch": 2})
    with pytest.raises(ValueError):
        checkpoint.save(d, _tree(2.0), meta={"loss": float("inf")})
    with pytest.raises(TypeError, match=r"\[.s.\] has dtype object"):
        checkpoint.save(d, {"w": np.ones(2), "s": np.array(["x"], dtype=object)})
    tree, meta = checkpoint.restore(d)
    assert meta == {"epoch": 1} and float(tree["params"]["w"][0, 0]) == 1.0
    assert not list(d.glob(".v*.tmp"))


_CHILD = textwrap.dedent("""
    import sys, numpy as np
    from subnets import checkpoint
    checkpoint.save(sys.argv[1], {"params": {"w": np.full((4, 3), 2.0, np.float32),
                                             "b": np.arange(3, dtype=np.int32)}},
                    meta={"epoch": 2})
""")


@pytest.mark.parametrize("phase", ["after_orbax", "after_manifest", "after_rename",
                                   "after_pointer"])
def test_sigkill_inside_save_leaves_one_complete_checkpoint(tmp_path, phase):
    d = tmp_path / "ck"
    checkpoint.save(d, _tree(1.0), meta={"epoch": 1})
    env = {**os.environ, "SUBNETS_CHECKPOINT_FAULT": phase}
    r = subprocess.run([sys.executable, "-c", _CHILD, str(d)], env=env, capture_output=True,
                       timeout=120)
    assert r.returncode == -9, r.stderr.decode()
    assert checkpoint.exists(d)
    tree, meta = checkpoint.restore(d)
    # Either the old or the new checkpoint, each whole: never a mixture.
    assert meta["epoch"] in (1, 2)
    np.testing.assert_array_equal(tree["params"]["w"],
                                  np.full((4, 3), float(meta["epoch"]), np.float32))
    # The pointer's atomic rename is the commit: before it the old version is current.
    assert meta["epoch"] == (2 if phase == "after_pointer" else 1)
    checkpoint.save(d, _tree(3.0), meta={"epoch": 3})  # the folder keeps working
    assert checkpoint.restore(d)[1] == {"epoch": 3}
    assert not list(d.glob(".v*.tmp"))


def test_damaged_latest_is_named_and_the_previous_is_used(tmp_path):
    d = tmp_path / "ck"
    checkpoint.save(d, _tree(1.0), meta={"epoch": 1})
    checkpoint.save(d, _tree(2.0), meta={"epoch": 2})
    target = max(_state_files(d), key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x10
    target.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=rf"{target.name}: sha256 mismatch.*using .*v000001"):
        tree, meta = checkpoint.restore(d)
    assert meta == {"epoch": 1}
    assert float(tree["params"]["w"][0, 0]) == 1.0


def test_a_forged_manifest_is_detected(tmp_path):
    d = tmp_path / "ck"
    checkpoint.save(d, _tree(1.0), meta={"epoch": 4})
    mpath = d / "v000001" / "manifest.json"
    m = json.loads(mpath.read_text())
    m["meta"]["epoch"] = 5
    mpath.write_text(json.dumps(m))
    assert not checkpoint.exists(d)
    with pytest.raises(CheckpointError, match="manifest checksum mismatch"):
        checkpoint.restore(d)


def test_fuzz_bit_flips_and_truncation_never_restore_changed_arrays(tmp_path):
    """Every single bit flip or truncation of any state file is caught, naming the file."""
    d = tmp_path / "ck"
    checkpoint.save(d, _tree(1.5), meta={"epoch": 1})
    files = _state_files(d)
    assert files
    rng = np.random.default_rng(0)
    trials = 0
    for f in files:
        original = f.read_bytes()
        cases = [original[: len(original) // 2], original[:-1], original + b"\0"]
        for _ in range(8):
            if original:
                flipped = bytearray(original)
                i = int(rng.integers(len(flipped)))
                flipped[i] ^= 1 << int(rng.integers(8))
                cases.append(bytes(flipped))
        for case in cases:
            f.write_bytes(case)
            assert not checkpoint.exists(d)
            with pytest.raises(CheckpointError, match=f.name):
                checkpoint.restore(d)
            trials += 1
        f.write_bytes(original)
    assert trials >= 11 * len(files)
    tree, _ = checkpoint.restore(d)
    np.testing.assert_array_equal(tree["params"]["w"], np.full((4, 3), 1.5, np.float32))
