"""IMP with rewinding: exact pruning counts, rewinding, every level kept."""

import math

import jax
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import subnets
from subnets import train
from subnets.data.batches import batches
from subnets.graph import get_path
from subnets.pruning import apply_masks, imp, magnitude_prune, make_train_fn

NET = subnets.zoo.create("dnn-s", num_classes=2, input_shape=(8,))


def _data(n=64):
    x = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def _layers(seed, shapes):
    rng = np.random.default_rng(seed)
    params = {f"l{i}": {"kernel": rng.normal(size=s).astype(np.float32)}
              for i, s in enumerate(shapes)}
    v = {"params": params}
    masks = {("params", f"l{i}", "kernel"): rng.random(s) < 0.8 for i, s in enumerate(shapes)}
    return v, masks


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 0.9),
       st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8)), min_size=1, max_size=4))
def test_global_threshold_prunes_exact_count_smallest_first(seed, fraction, shapes):
    v, masks = _layers(seed, shapes)
    new = magnitude_prune(v, masks, fraction, scope="global", floor=None, warn=False)
    remaining = sum(int(m.sum()) for m in masks.values())
    pruned = remaining - sum(int(np.sum(m)) for m in new.values())
    assert pruned == math.ceil(fraction * remaining)
    kept_mags, pruned_mags = [], []
    for p, m in masks.items():
        n = np.asarray(new[p])
        assert not np.any(n & ~m)  # a subset of the old mask
        w = np.abs(np.asarray(get_path(v, p)))
        kept_mags.append(w[n])
        pruned_mags.append(w[m & ~n])
    kept, gone = np.concatenate(kept_mags), np.concatenate(pruned_mags)
    if kept.size and gone.size:
        assert gone.max() <= kept.min()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 0.9),
       st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8)), min_size=1, max_size=4))
def test_layer_threshold_prunes_exact_count_per_layer(seed, fraction, shapes):
    v, masks = _layers(seed, shapes)
    new = magnitude_prune(v, masks, fraction, scope="layer", floor=None, warn=False)
    for p, m in masks.items():
        n = np.asarray(new[p])
        assert int(m.sum()) - int(n.sum()) == math.ceil(fraction * int(m.sum()))
        w = np.abs(np.asarray(get_path(v, p)))
        if n.any() and (m & ~n).any():
            assert w[m & ~n].max() <= w[n].min()


def test_global_and_layer_differ_when_scales_differ():
    v = {"params": {"a": {"kernel": np.full((10, 10), 0.01, np.float32)},
                    "b": {"kernel": np.ones((10, 10), np.float32)}}}
    v["params"]["a"]["kernel"] += np.arange(100).reshape(10, 10) * 1e-4
    v["params"]["b"]["kernel"] += np.arange(100).reshape(10, 10) * 1e-4
    masks = {("params", k, "kernel"): np.ones((10, 10), bool) for k in "ab"}
    glob = magnitude_prune(v, masks, 0.4, scope="global", floor=None, warn=False)
    layer = magnitude_prune(v, masks, 0.4, scope="layer")
    assert int(glob[("params", "a", "kernel")].sum()) == 20  # all 80 pruned from the small layer
    assert int(glob[("params", "b", "kernel")].sum()) == 100
    # The default floor keeps 4 output units' worth (4 x 10 weights) in the small layer.
    guarded = magnitude_prune(v, masks, 0.4, scope="global")
    assert int(guarded[("params", "a", "kernel")].sum()) == 40
    assert sum(int(m.sum()) for m in guarded.values()) == 120
    assert int(layer[("params", "a", "kernel")].sum()) == 60
    assert int(layer[("params", "b", "kernel")].sum()) == 60
    with pytest.raises(ValueError, match="scope"):
        magnitude_prune(v, masks, 0.4, scope="net")


def test_make_train_fn_returns_the_rewind_steps_weights():
    x, y = _data()
    tx = optax.sgd(0.05, momentum=0.9)
    v = NET.init(jax.random.key(0))
    key = jax.random.key(3)
    fn = make_train_fn(NET, x, y, epochs=2, batch_size=16, optimizer=tx, rewind_step=3,
                       progress=False)
    trained, rewind = fn(v, {}, key=key)
    # the same three steps by hand
    step = train.make_train_step(NET, tx)
    state = train.init_state(v, tx)
    for i, (xb, yb) in enumerate(batches(x, y, 16, key=jax.random.split(key, 2)[0])):
        if i == 3:
            break
        state, _ = step(state, xb, yb)
    for a, b in zip(jax.tree.leaves(rewind), jax.tree.leaves(state.variables), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    diff = [np.any(np.asarray(a) != np.asarray(b))
            for a, b in zip(jax.tree.leaves(rewind), jax.tree.leaves(trained), strict=True)]
    assert any(diff)
    _, at0 = make_train_fn(NET, x, y, epochs=1, batch_size=16, optimizer=tx,
                           progress=False)(v, {}, key=key)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(at0), jax.tree.leaves(v),
                                                    strict=True))
    with pytest.raises(ValueError, match="rewind_step"):
        make_train_fn(NET, x, y, epochs=1, batch_size=16, rewind_step=99)


def test_imp_rewinds_every_level_to_level0_rewind_point():
    v = NET.init(jax.random.key(0))
    seen = []

    def train_fn(variables, masks, *, key):
        seen.append((variables, masks))
        moved = jax.tree.map(lambda a: a + 1.0, variables)  # "training"
        rewind = jax.tree.map(lambda a: a + 0.5, variables)  # "step k"
        return moved, rewind

    out = imp(NET, v, train_fn=train_fn, levels=3, fraction=0.5, key=jax.random.key(1))
    assert [lv.level for lv in out] == [0, 1, 2, 3]
    rewind0 = jax.tree.map(lambda a: a + 0.5, v)
    for lv, (start, masks) in zip(out[1:], seen[1:], strict=True):
        expect = apply_masks(rewind0, masks)
        for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(expect), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        for p, m in lv.masks.items():
            assert np.all(np.asarray(get_path(lv.variables, p))[~np.asarray(m)] == 0)
    total = sum(m.size for m in out[0].masks.values())
    remaining = total
    for lv in out:
        assert lv.metrics["remaining"] == remaining
        remaining -= math.ceil(0.5 * remaining)


def test_imp_end_to_end_keeps_each_sparse_level():
    x, y = _data()
    fn = make_train_fn(NET, x, y, epochs=1, batch_size=16, rewind_step=1, progress=False)
    only = [("params", "dense1", "kernel"), ("params", "dense2", "kernel")]
    out = imp(NET, NET.init(jax.random.key(0)), train_fn=fn, levels=2, scope="layer",
              prunable=only, eval_fn=lambda v: {"acc": train.evaluate(NET, v, x, y)},
              key=jax.random.key(2))
    assert [round(lv.density, 3) for lv in out] == [1.0, 0.8, 0.64]
    assert set(out[-1].masks) == set(only)
    assert all(0.0 <= lv.metrics["acc"] <= 1.0 for lv in out)
    for lv in out:
        for p, m in lv.masks.items():
            assert np.all(np.asarray(get_path(lv.variables, p))[~np.asarray(m)] == 0.0)
    with pytest.raises(KeyError, match="nope"):
        imp(NET, NET.init(jax.random.key(0)), train_fn=fn, levels=1,
            prunable=[("params", "nope", "kernel")], key=jax.random.key(0))
