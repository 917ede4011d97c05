"""IMP checkpoints every round and every epoch of a round: an interrupted run, rerun with the
same settings, restores the finished rounds, resumes the interrupted one and ends bit-identical
(weights, masks, metrics) to an uninterrupted run. (A SIGKILL variant of ``subnets prune
--method imp`` is in test_reliability_kill.py.)"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from _interrupt import Stop, stop_after

import subnets
from subnets import checkpoint, io, runs
from subnets.pruning import imp, make_train_fn

NET = subnets.zoo.create("dnn-s", num_classes=2, input_shape=(8,))
X = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32)


def _run(ck=None, **kw):
    fn = make_train_fn(NET, X, Y, epochs=3, batch_size=16, rewind_step=kw.pop("rewind_step", 5),
                       progress=False)
    args = dict(train_fn=fn, levels=2, fraction=0.5, rewind_step=5, key=jax.random.key(1),
                eval_fn=lambda v: {"acc": subnets.train.evaluate(NET, v, X, Y)})
    return imp(NET, NET.init(jax.random.key(0)), checkpoint_dir=ck, **{**args, **kw})


def _same(ref, out):
    assert len(ref) == len(out)
    for a, b in zip(ref, out, strict=True):
        assert a.level == b.level and a.density == b.density
        assert a.metrics == b.metrics
        assert set(a.masks) == set(b.masks)
        for p in a.masks:
            np.testing.assert_array_equal(np.asarray(a.masks[p]), np.asarray(b.masks[p]))
        for x, y in zip(jax.tree.leaves(a.variables), jax.tree.leaves(b.variables), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def ref():
    return _run()


# 3 epochs per round: save 2 = round 0 epoch 2 (past the rewind point, step 5 of 4 per epoch),
# save 4 = round 1 epoch 1, save 9 = round 2's last epoch (the round not yet committed).
@pytest.mark.parametrize("stop_at", [2, 4, 9])
def test_an_interrupted_imp_resumes_to_the_same_levels(tmp_path, monkeypatch, ref, stop_at):
    ck = tmp_path / "ck"
    count = stop_after(monkeypatch, stop_at)
    with pytest.raises(Stop):
        _run(ck)
    rounds = (stop_at - 1) // 3
    for i in range(3):
        assert checkpoint.exists(ck / f"level_{i}") == (i < rounds)
    training = ck / f"level_{rounds}_training" / "training"
    assert checkpoint.restore(training)[1]["epoch"] == (stop_at - 1) % 3 + 1
    assert checkpoint.exists(ck / "level_0_training" / "rewind") == (rounds == 0)
    count["n"] = -10**6  # no more stops
    before = count["n"]
    out = _run(ck)
    _same(ref, out)
    # Only the unfinished epochs were trained again (3 per round, minus the saved ones).
    assert count["n"] - before == 3 * (3 - rounds) - ((stop_at - 1) % 3 + 1)
    # A finished round's training checkpoint is gone; the rounds themselves stay.
    assert not (ck / "level_0_training").exists()
    assert all(checkpoint.exists(ck / f"level_{i}") for i in range(3))
    _same(ref, _run(ck))  # a rerun of a finished run only restores


def test_rounds_of_other_settings_are_refused(tmp_path):
    ck = tmp_path / "ck"
    fn = make_train_fn(NET, X, Y, epochs=1, batch_size=32, progress=False)
    imp(NET, NET.init(jax.random.key(0)), train_fn=fn, levels=0, key=jax.random.key(1),
        checkpoint_dir=ck)
    with pytest.raises(checkpoint.CheckpointError, match=r"level_0: an IMP round of other "
                                                         r"settings: fraction \(0.2 there, 0.5"):
        imp(NET, NET.init(jax.random.key(0)), train_fn=fn, levels=0, fraction=0.5,
            key=jax.random.key(1), checkpoint_dir=ck)
    with pytest.raises(checkpoint.CheckpointError, match=r"levels \(0 there, 1 now\)"):
        imp(NET, NET.init(jax.random.key(0)), train_fn=fn, levels=1, key=jax.random.key(1),
            checkpoint_dir=ck)
    with pytest.raises(checkpoint.CheckpointError, match=r"key \("):
        imp(NET, NET.init(jax.random.key(0)), train_fn=fn, levels=0, key=jax.random.key(2),
            checkpoint_dir=ck)
    with pytest.raises(checkpoint.CheckpointError, match=r"variables \('sha256:"):
        imp(NET, NET.init(jax.random.key(5)), train_fn=fn, levels=0, key=jax.random.key(1),
            checkpoint_dir=ck)


PRUNE = ["prune", "--method", "imp", "--model", "dnn-s", "--data", "digits", "--levels", "1",
         "--epochs", "2", "--batch-size", "64", "--limit", "256", "--quiet"]


def test_prune_imp_interrupted_mid_round_resumes_bit_identically(tmp_path, monkeypatch, capsys):
    from subnets.cli import main

    ref, out = tmp_path / "ref", tmp_path / "run"
    assert main([*PRUNE, "--out", str(ref)]) == 0
    real = checkpoint.save_state
    count = {"n": 0}

    def save_state(*a, **k):  # Ctrl-C right after round 1's first epoch was saved
        real(*a, **k)
        count["n"] += 1
        if count["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_state", save_state)
    assert main([*PRUNE, "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "interrupted; saved in" in err and "checkpoints" in err
    assert runs.read_manifest(out)["status"] == "interrupted"
    assert checkpoint.exists(out / "checkpoints" / "level_0")
    assert not checkpoint.exists(out / "checkpoints" / "level_1")
    assert checkpoint.restore(out / "checkpoints" / "level_1_training" / "training")[1][
        "epoch"] == 1
    monkeypatch.setattr(checkpoint, "save_state", real)
    assert main([*PRUNE, "--out", str(out)]) == 0
    for name in ("level_0", "level_1"):
        a, meta_a = io.load(ref / f"{name}.subnets")
        b, meta_b = io.load(out / f"{name}.subnets")
        assert meta_a == meta_b
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)
    ma = json.loads((ref / "metrics.json").read_text())["levels"]
    mb = json.loads((out / "metrics.json").read_text())["levels"]
    timing = ("removal_seconds",)
    assert [{k: v for k, v in r.items() if k not in timing} for r in ma] == \
        [{k: v for k, v in r.items() if k not in timing} for r in mb]
