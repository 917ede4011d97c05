"""Masked training: pruned weights stay exactly zero with any optax optimiser."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import subnets
from subnets import train
from subnets.graph import get_path
from subnets.pruning import (
    MaskedState,
    apply_masks,
    density,
    masked,
    set_masks,
    sparsity_report,
)

NET = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(12,))


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)


def _train(tx, variables, steps=15):
    x, y = _data()
    step = train.make_train_step(NET, tx)
    state = train.init_state(variables, tx)
    for i in range(steps):
        sl = slice((i * 16) % 64, (i * 16) % 64 + 16)
        state, _ = step(state, x[sl], y[sl])
    return state


OPTIMISERS = {
    "adam": optax.adam(1e-2),
    "sgd_momentum_wd": optax.chain(optax.add_decayed_weights(1e-2),
                                   optax.sgd(0.1, momentum=0.9)),
}


@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_pruned_weights_stay_exactly_zero(name):
    v = NET.init(jax.random.key(0))
    masks = subnets.topk_masks(v, 0.3, exclude=None, graph=NET.graph)
    v = apply_masks(v, masks)
    state = _train(masked(OPTIMISERS[name], masks), v)
    assert isinstance(state.opt_state, MaskedState)
    for p, m in masks.items():
        before, after = np.asarray(get_path(v, p)), np.asarray(get_path(state.variables, p))
        assert np.all(after[~np.asarray(m)] == 0.0), p
        assert np.any(after[np.asarray(m)] != before[np.asarray(m)]), p  # the rest did train
    # the unmasked optimiser would move the pruned weights (so the test can fail)
    plain = _train(OPTIMISERS[name], v, steps=3)
    p = next(iter(masks))
    assert np.any(np.asarray(get_path(plain.variables, p))[~np.asarray(masks[p])] != 0)


def test_set_masks_masks_leftover_momentum():
    v = NET.init(jax.random.key(1))
    full = {p: jnp.ones_like(m) for p, m in subnets.topk_masks(v, 1.0, exclude=None).items()}
    tx = masked(optax.sgd(0.1, momentum=0.9), full)
    state = _train(tx, v, steps=5)
    masks = subnets.topk_masks(state.variables, 0.5, exclude=None)
    pruned = apply_masks(state.variables, masks)
    st2 = train.TrainState(pruned, set_masks(state.opt_state, masks), state.step)
    x, y = _data()
    step = train.make_train_step(NET, tx)
    for _ in range(3):
        st2, _ = step(st2, x[:16], y[:16])
    for p, m in masks.items():
        assert np.all(np.asarray(get_path(st2.variables, p))[~np.asarray(m)] == 0.0)


def test_errors_name_the_path():
    params = {"d": {"kernel": jnp.ones((2, 2))}}
    with pytest.raises(ValueError, match="not under 'params'"):
        masked(optax.sgd(0.1), {("batch_stats", "d", "mean"): jnp.ones(2, bool)})
    tx = masked(optax.sgd(0.1), {("params", "d", "kernel"): jnp.ones((3,), bool)})
    with pytest.raises(ValueError, match="params/d/kernel"):
        tx.init(params)
    with pytest.raises(ValueError, match="paths differ"):
        tx2 = masked(optax.sgd(0.1), {("params", "d", "kernel"): jnp.ones((2, 2), bool)})
        set_masks(tx2.init(params), {("params", "e", "kernel"): jnp.ones((2, 2), bool)})


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_apply_masks_zeroes_exactly_the_masked(r, c, seed):
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, size=(r, c)).astype(np.float32)
    m = rng.random((r, c)) < 0.5
    v = {"params": {"l": {"kernel": w, "bias": np.ones(c, np.float32)}}}
    out = apply_masks(v, {("params", "l", "kernel"): m})
    k = np.asarray(out["params"]["l"]["kernel"])
    assert np.array_equal(k == 0, ~m)
    assert np.array_equal(k[m], w[m])
    rep = sparsity_report(out, {("params", "l", "kernel"): m})
    assert rep["total"]["kept"] == int(m.sum()) == r * c - rep["total"]["zeros"]
    assert density({("params", "l", "kernel"): m}) == pytest.approx(m.mean())
