"""Checkpoints give back what was saved: optimiser state types, and the old (pre-version) layout."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import optax
import pytest

import subnets
from subnets import checkpoint, train
from subnets.checkpoint import CheckpointError
from subnets.pruning.masked import MaskedState, masked_optimizer

_NET = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
_VARS = _NET.init(jax.random.key(0))
_X = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
_Y = np.arange(16) % 3
_MASKS = {("params", "dense1", "kernel"):
          np.random.default_rng(1).random(_VARS["params"]["dense1"]["kernel"].shape) > 0.5}

_OPTIMISERS = {
    "adam": lambda: optax.adam(1e-3),
    "sgd-momentum": lambda: optax.sgd(0.05, momentum=0.9),
    "masked-adam": lambda: masked_optimizer(optax.adam(1e-3), _MASKS),
    "masked-sgd-momentum": lambda: masked_optimizer(optax.sgd(0.05, momentum=0.9), _MASKS),
    "default-schedule": lambda: train.default_optimizer(20),
}


def _trained(tx, step, n=3):
    state = train.init_state(_VARS, tx)
    for _ in range(n):
        state, _ = step(state, _X, _Y)
    return state


@pytest.mark.parametrize("name", sorted(_OPTIMISERS))
def test_restored_state_has_the_saved_types_and_resumes_identically(tmp_path, name):
    tx = _OPTIMISERS[name]()
    step = train.make_train_step(_NET, tx)
    state = _trained(tx, step)
    compiled = step._cache_size()
    checkpoint.save_state(tmp_path / "ck", state, epoch=1, epochs=4)

    back, done = checkpoint.restore_state(tmp_path / "ck", train.init_state(_VARS, tx), epochs=4)
    assert done == 1
    assert jax.tree.structure(back) == jax.tree.structure(state)
    assert isinstance(back, train.TrainState)
    if name.startswith("masked"):
        assert isinstance(back.opt_state, MaskedState)
        assert set(back.opt_state.masks) == set(_MASKS)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(back), strict=True):
        assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # One more step from the saved and from the restored state: bit-identical, same program.
    s1, loss1 = step(state, _X, _Y)
    s2, loss2 = step(back, _X, _Y)
    assert float(loss1) == float(loss2)
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert step._cache_size() == compiled, "the restored state made the step recompile"


def test_restore_state_names_the_leaf_of_another_optimiser(tmp_path):
    tx = optax.sgd(0.05, momentum=0.9)
    state = _trained(tx, train.make_train_step(_NET, tx), n=1)
    checkpoint.save_state(tmp_path / "ck", state, epoch=1, epochs=2)
    with pytest.raises(CheckpointError, match=r"ck: .*opt_state.*different model or optimiser"):
        checkpoint.restore_state(tmp_path / "ck", train.init_state(_VARS, optax.adam(1e-3)),
                                 epochs=2)
    # Same number and shapes of leaves, another optimiser: still refused, naming the leaf.
    other = masked_optimizer(optax.sgd(0.05, momentum=0.9), _MASKS)
    with pytest.raises(CheckpointError, match=r"leaf .*opt_state"):
        checkpoint.restore_state(tmp_path / "ck", train.init_state(_VARS, other), epochs=2)


def test_restore_like_gives_named_tuples_back(tmp_path):
    tx = optax.adam(1e-3)
    opt = tx.init(_VARS["params"])
    _, opt = tx.update(_VARS["params"], opt, _VARS["params"])
    checkpoint.save(tmp_path / "ck", {"opt": opt, "step": np.int32(4)}, meta={"k": 1})
    plain, _ = checkpoint.restore(tmp_path / "ck")
    assert isinstance(plain["opt"], list)  # orbax alone: dicts and lists
    template = {"opt": tx.init(_VARS["params"]), "step": np.int32(0)}
    back, meta = checkpoint.restore(tmp_path / "ck", like=template)
    assert meta == {"k": 1}
    assert jax.tree.structure(back) == jax.tree.structure(template)
    assert type(back["opt"][0]) is optax.ScaleByAdamState and int(back["opt"][0].count) == 1
    np.testing.assert_array_equal(back["opt"][0].mu["dense0"]["kernel"],
                                  np.asarray(opt[0].mu["dense0"]["kernel"]))
    bad = {"opt": optax.sgd(0.1, momentum=0.9).init(_VARS["params"]), "step": np.int32(0)}
    with pytest.raises(CheckpointError, match=r"no leaf \['opt'\]\[0\]\.trace"):
        checkpoint.restore(tmp_path / "ck", like=bad)


# ------------------------------------------------------------------ the layout before versions


def _tree(v: float) -> dict:
    return {"params": {"w": np.full((4, 3), v, np.float32), "b": np.arange(3, dtype=np.int32)}}


def _write_old_layout(d, tree, meta):
    """What ``checkpoint.save`` wrote before versioned folders (commit acdde0c)."""
    import orbax.checkpoint as ocp

    d.mkdir(parents=True, exist_ok=True)
    ocp.PyTreeCheckpointer().save(str((d / "state").absolute()), tree)
    (d / "meta.json.tmp").write_text(json.dumps(meta, indent=1, sort_keys=True))
    (d / "meta.json.tmp").rename(d / "meta.json")


def test_old_layout_checkpoints_are_read(tmp_path):
    d = tmp_path / "old"
    _write_old_layout(d, _tree(2.0), {"epoch": 4, "seed": 0})
    assert checkpoint.exists(d)
    tree, meta = checkpoint.restore(d)
    assert meta == {"epoch": 4, "seed": 0}
    np.testing.assert_array_equal(tree["params"]["w"], np.full((4, 3), 2.0, np.float32))
    np.testing.assert_array_equal(tree["params"]["b"], np.arange(3))

    # A new save writes a version beside it and keeps it; the version wins while it verifies.
    checkpoint.save(d, _tree(5.0), meta={"epoch": 5})
    assert (d / "state").is_dir() and (d / "meta.json").is_file() and (d / "v000001").is_dir()
    assert checkpoint.restore(d)[1] == {"epoch": 5}
    shutil.rmtree(d / "v000001" / "state")
    with pytest.warns(UserWarning, match=r"v000001.*using .*old[/\\]state"):
        tree, meta = checkpoint.restore(d)
    assert meta["epoch"] == 4 and float(tree["params"]["w"][0, 0]) == 2.0


def test_damaged_old_layout_is_named_and_not_reported_as_existing(tmp_path):
    d = tmp_path / "old"
    _write_old_layout(d, _tree(1.0), {"epoch": 1})
    (d / "meta.json").write_text("{broken")
    assert not checkpoint.exists(d)
    with pytest.raises(CheckpointError, match=r"meta\.json: unreadable"):
        checkpoint.restore(d)

    d = tmp_path / "half"  # the kill-during-rmtree case of issue 11: state/ half deleted
    _write_old_layout(d, _tree(1.0), {"epoch": 4})
    (d / "state" / "_METADATA").unlink()
    assert not checkpoint.exists(d)
    with pytest.raises(CheckpointError, match=r"_METADATA: missing"):
        checkpoint.restore(d)

    d = tmp_path / "nodata"
    _write_old_layout(d, _tree(1.0), {"epoch": 4})
    for p in (d / "state").rglob("*"):
        if p.is_dir() and p.name == "d":
            shutil.rmtree(p)
    assert not checkpoint.exists(d)
    with pytest.raises(CheckpointError, match=r"nodata[/\\]state: orbax could not read it"):
        checkpoint.restore(d)
