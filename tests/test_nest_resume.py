"""REDS joint fine-tuning checkpoints every epoch and the scored selection is saved: an
interrupted ``nest``, rerun with the same settings, neither scores again nor repeats finished
fine-tuning epochs, and ends bit-identical to an uninterrupted run. (SIGKILL variants are in
test_reliability_kill.py.)"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from _interrupt import Stop, stop_after

import subnets
from subnets import checkpoint, io, runs
from subnets.nested import pipeline
from subnets.nested.finetune import finetune

LEVELS = [{"h0": 8, "h1": 4, "h2": 8}, {"h0": 16, "h1": 16, "h2": 16}, {}]


@pytest.fixture(scope="module")
def setup():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(6,), norm="batch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0).astype(np.int32)
    return net, net.init(jax.random.key(0)), x, y


KW = dict(epochs=3, batch_size=16, key=jax.random.key(1), progress=False)


def _leaves(fam):
    return [np.asarray(a) for a in jax.tree.leaves((fam.variables, fam.level_batch_stats))]


@pytest.fixture(scope="module")
def ref(setup):
    net, v, x, y = setup
    return _leaves(finetune(net, v, LEVELS, x, y, **KW))


@pytest.mark.parametrize("stop_at", [1, 3])
def test_interrupted_finetuning_resumes_bit_identically(setup, ref, tmp_path, monkeypatch,
                                                        stop_at):
    net, v, x, y = setup
    ck = tmp_path / "ft"
    count = stop_after(monkeypatch, stop_at)
    with pytest.raises(Stop):
        finetune(net, v, LEVELS, x, y, checkpoint_dir=ck, **KW)
    assert checkpoint.restore(ck)[1]["epoch"] == stop_at
    count["n"] = -100
    fam = finetune(net, v, LEVELS, x, y, checkpoint_dir=ck, **KW)
    assert count["n"] == -100 + 3 - stop_at  # only the unfinished epochs ran
    assert fam.level_batch_stats is not None
    for a, b in zip(ref, _leaves(fam), strict=True):
        np.testing.assert_array_equal(a, b)


def test_finetuning_of_other_settings_is_refused_or_restarted(setup, ref, tmp_path,
                                                              monkeypatch):
    net, v, x, y = setup
    ck = tmp_path / "ft"
    finetune(net, v, LEVELS, x, y, checkpoint_dir=ck, checkpoint_meta={"lr": 0.1}, **KW)
    with pytest.raises(checkpoint.CheckpointError, match=r"ft: fine-tuning of other settings: "
                                                         r"distill \(0.0 there, 0.5 now\)"):
        finetune(net, v, LEVELS, x, y, checkpoint_dir=ck, checkpoint_meta={"lr": 0.1},
                 distill=0.5, **KW)
    with pytest.raises(checkpoint.CheckpointError, match=r"lr \(0.1 there, 0.2 now\)"):
        finetune(net, v, LEVELS, x, y, checkpoint_dir=ck, checkpoint_meta={"lr": 0.2}, **KW)
    with pytest.raises(checkpoint.CheckpointError, match=r"levels \("):
        finetune(net, v, LEVELS[1:], x, y, checkpoint_dir=ck, checkpoint_meta={"lr": 0.1},
                 **KW)
    other = jax.tree.map(lambda a: a + 1, v)
    with pytest.raises(checkpoint.CheckpointError, match=r"variables \('sha256:"):
        finetune(net, other, LEVELS, x, y, checkpoint_dir=ck, checkpoint_meta={"lr": 0.1},
                 **KW)
    fam = finetune(net, v, LEVELS, x, y, checkpoint_dir=ck, restart=True, **KW)
    for a, b in zip(ref, _leaves(fam), strict=True):
        np.testing.assert_array_equal(a, b)
    assert checkpoint.restore(ck)[1]["run"]["epochs"] == 3


NEST = ["nest", "--model", "dnn-s", "--data", "digits", "--budgets", "0.5", "--limit", "256",
        "--epochs", "1", "--finetune-epochs", "2", "--batch-size", "64", "--score-batches", "2",
        "--quiet"]


def _family(out):
    tree, _ = io.load(out / "family.subnets")
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def test_nest_interrupted_in_finetuning_resumes_without_scoring_again(tmp_path, monkeypatch,
                                                                       capsys):
    from subnets.cli import main

    ref, out = tmp_path / "ref", tmp_path / "run"
    assert main([*NEST, "--out", str(ref)]) == 0
    # save_state calls: 1 = base epoch 1, 2 = fine-tuning epoch 1 -> Ctrl-C right after it.
    stop_after(monkeypatch, 2, KeyboardInterrupt)
    assert main([*NEST, "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "interrupted; saved in" in err and "selection" in err and "finetune" in err
    assert runs.read_manifest(out)["status"] == "interrupted"
    assert checkpoint.exists(out / "selection")
    assert checkpoint.restore(out / "finetune")[1]["epoch"] == 1

    def no_scoring(*a, **k):
        raise AssertionError("scored again")

    count = stop_after(monkeypatch, 0)
    monkeypatch.setattr(pipeline, "score_channels", no_scoring)
    assert main([*NEST, "--out", str(out)]) == 0
    assert count["n"] == 1  # only fine-tuning epoch 2 ran
    for a, b in zip(_family(ref), _family(out), strict=True):
        np.testing.assert_array_equal(a, b)
    ma = json.loads((ref / "metrics.json").read_text())
    mb = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "accuracy_before_finetune", "widths", "macs"):
        assert [lv[key] for lv in ma["levels"]] == [lv[key] for lv in mb["levels"]]
    assert ma["base"]["accuracy"] == mb["base"]["accuracy"]
    # Fine-tuning flags may change between runs: the selection is kept, fine-tuning restarts.
    args = list(NEST)
    args[args.index("--finetune-epochs") + 1] = "1"
    assert main([*args, "--out", str(out)]) == 0
    assert checkpoint.restore(out / "finetune")[1]["epochs"] == 1
    assert count["n"] == 2
