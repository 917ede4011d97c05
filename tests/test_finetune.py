"""Tests for subnets.nested.finetune: the joint step learns, compiles once, keeps per-level
BatchNorm statistics, and weights levels as REDS does."""

from __future__ import annotations

import functools

import jax
import numpy as np
import optax
import pytest

import subnets
from subnets.nested.finetune import finetune, level_weights, make_joint_step
from subnets.runtime.family import Family

LEVELS = [{"h0": 8, "h1": 4, "h2": 8}, {"h0": 16, "h1": 16, "h2": 16}, {}]


@functools.cache
def _setup():
    # A BatchNorm DNN: per-level statistics are exercised, compilation stays cheap.
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(12, 8, 1), norm="batch")
    shapes = jax.eval_shape(net.init, jax.random.key(0))
    rng = np.random.default_rng(0)

    def fill(path, s):
        if path[-1].key == "var":
            return np.ones(s.shape, np.float32)
        if path[-1].key in ("mean", "bias"):
            return np.zeros(s.shape, np.float32)
        if path[-1].key == "scale":
            return np.ones(s.shape, np.float32)
        fan_in = int(np.prod(s.shape[:-1]))
        return rng.normal(scale=1 / np.sqrt(fan_in), size=s.shape).astype(np.float32)

    v = jax.tree_util.tree_map_with_path(fill, shapes)
    x = rng.normal(size=(32, 12, 8, 1)).astype(np.float32)
    y = (x[:, :6].mean(axis=(1, 2, 3)) > 0).astype(np.int32) + (x[:, 6:, :4].mean(
        axis=(1, 2, 3)) > 0).astype(np.int32)
    return net, v, x, y


def test_step_decreases_loss_compiles_once_keeps_level_stats():
    net, v, x, y = _setup()
    traces = []

    def counting_loss(logits, labels):
        traces.append(1)  # runs only while tracing
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    trainer = make_joint_step(net, LEVELS, tx=optax.adam(3e-3), loss_fn=counting_loss)
    state = trainer.init(v)
    first = None
    for _ in range(15):
        state, per = trainer.step(state, x, y)
        total = float(np.dot(trainer.weights, np.asarray(per)))
        first = total if first is None else first
    assert len(traces) == len(LEVELS)  # one trace: one loss_fn call per level
    assert total < 0.8 * first
    assert int(state.step) == 15
    assert np.asarray(per).shape == (len(LEVELS),)
    # Every level keeps its own BatchNorm statistics; the full level's ride in the variables.
    mean = np.asarray(state.level_batch_stats["norm1"]["mean"])
    assert mean.shape == (3, 144)
    # Level 0 keeps 4 channels of h1: only those statistics moved (they start at 0).
    assert np.all(mean[0, 4:] == 0) and np.all(mean[0, :4] != 0)
    assert not np.allclose(mean[1, :4], mean[2, :4])
    np.testing.assert_array_equal(np.asarray(state.variables["batch_stats"]["norm1"]["mean"]),
                                  mean[2])


def test_masked_weights_of_small_levels_still_train_through_larger():
    net, v, x, y = _setup()
    trainer = make_joint_step(net, [LEVELS[0]], tx=optax.sgd(0.1))
    state, _ = trainer.step(trainer.init(v), x, y)
    k0 = np.asarray(v["params"]["dense2"]["kernel"])
    k1 = np.asarray(state.variables["params"]["dense2"]["kernel"])
    # Only the smallest level trains: weights outside its prefix get no gradient.
    np.testing.assert_array_equal(k1[4:, :], k0[4:, :])
    np.testing.assert_array_equal(k1[:, 8:], k0[:, 8:])
    assert not np.allclose(k1[:4, :8], k0[:4, :8])


def test_level_weights_are_sqrt_param_fractions():
    net, _, _, _ = _setup()
    w = level_weights(net, LEVELS)
    frac = np.array([subnets.cost.params(net, lv) for lv in LEVELS]) / subnets.cost.params(net)
    np.testing.assert_allclose(w, np.sqrt(frac) / np.sqrt(frac).sum())
    assert np.all(np.diff(w) > 0)


def test_distillation_and_bad_arguments():
    net, v, x, y = _setup()
    trainer = make_joint_step(net, LEVELS, distill=0.5)
    _, per = trainer.step(trainer.init(v), x, y)
    assert np.all(np.isfinite(np.asarray(per)))
    with pytest.raises(ValueError, match="distill"):
        make_joint_step(net, LEVELS, distill=1.5)
    with pytest.raises(ValueError, match="level 1"):
        make_joint_step(net, [{}, {"g9": 3}])


def test_finetune_returns_family_with_level_stats():
    net, v, x, y = _setup()
    fam = finetune(net, v, LEVELS, x, y, epochs=2, batch_size=16, key=jax.random.key(0),
                   progress=False)
    assert isinstance(fam, Family) and fam.level_batch_stats is not None
    small = fam.level_variables(0)
    assert small["batch_stats"]["norm1"]["mean"].shape == (4,)
    np.testing.assert_array_equal(small["batch_stats"]["norm1"]["mean"],
                                  fam.level_batch_stats["norm1"]["mean"][0, :4])
    out = fam.apply(x[:4], 0)
    assert out.shape == (4, 3) and np.all(np.isfinite(np.asarray(out)))
