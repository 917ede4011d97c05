"""remove_dead: exact (function-preserving) removal of dead channels on every zoo model."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import subnets
from subnets.graph import get_path, leaf_paths, set_paths
from subnets.pruning import remove_dead

SHAPES = {"dnn-s": (20,), "dnn-m": (20,), "dnn-l": (20,), "cnn-s": (24, 8, 1),
          "cnn-m": (24, 8, 1), "cnn-l": (24, 8, 1), "ds-cnn-s": (12, 6, 1),
          "ds-cnn-m": (12, 6, 1), "ds-cnn-l": (12, 6, 1), "vision-ds-cnn": (8, 8, 1),
          "cpreresnet20": (8, 8, 3), "vgg16": (8, 8, 3)}


@functools.cache
def _net(name, norm=None):
    return subnets.zoo.create(name, num_classes=5, input_shape=SHAPES[name], norm=norm)


@functools.cache
def _apply(name, norm=None):
    return jax.jit(_net(name, norm).apply)


def _kill(net, v, rng, frac, *, depthwise=False):
    """Non-zero biases / norm shifts / statistics, and random dead channels in every group."""
    ups = {}
    for p, leaf in leaf_paths(v):
        shape = np.shape(leaf)
        if p[-1] in ("bias", "mean"):
            ups[p] = rng.normal(size=shape).astype(np.float32)
        elif p[-1] in ("var", "scale"):
            ups[p] = rng.uniform(0.5, 2.0, size=shape).astype(np.float32)
    v = set_paths(v, ups)
    ups = {}
    for grp in net.graph.free:
        dead = rng.random(grp.size) < frac
        dead[0] = True
        kinds = ("depthwise",) if depthwise else ("conv", "dense")
        for lay in net.graph.layers:
            group = lay.in_group if lay.kind == "depthwise" else lay.out_group
            feeds = group == grp.name
            if lay.kind not in kinds or not feeds:
                continue
            m = next(m for m in grp.members if m.path == lay.path)
            a = np.array(ups.get(lay.path, get_path(v, lay.path)))
            idx = [slice(None)] * a.ndim
            idx[m.axis] = dead
            a[tuple(idx)] = 0.0
            ups[lay.path] = a
            if lay.kind != "depthwise":
                # a strongly negative shift right after the producer: some constants are 0
                for mem in grp.members:
                    if mem.path[-1] == "bias" and mem.path[0] == "params":
                        b = np.array(ups.get(mem.path, get_path(v, mem.path)))
                        b[0] = -5.0
                        ups[mem.path] = b
    return set_paths(v, ups)


def _assert_same(name, v, new, key, norm=None):
    x = jax.random.normal(key, (6,) + SHAPES[name])
    a = np.asarray(_apply(name, norm)(v, x))
    b = np.asarray(_net(name, norm).apply(new, x))
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(a).max()))


def _property(name, seed, frac):
    net = _net(name)
    v = _kill(net, net.init(jax.random.key(seed % 1000)), np.random.default_rng(seed), frac)
    new, widths = remove_dead(net, v, check=False)
    net.graph.validate(new, widths=widths)
    _assert_same(name, v, new, jax.random.key(seed + 1))
    full = net.graph.sizes
    assert all(widths[g] <= full[g] for g in full)
    assert sum(widths.values()) < sum(full.values())


_SEEDS = dict(seed=st.integers(0, 2**31 - 1), frac=st.floats(0.1, 0.6))
_QUIET = [HealthCheck.too_slow]


@pytest.mark.parametrize("name", list(SHAPES))
@settings(max_examples=1, deadline=None, derandomize=True, suppress_health_check=_QUIET)
@given(**_SEEDS)
def test_remove_dead_preserves_function_and_shrinks(name, seed, frac):
    _property(name, seed, frac)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SHAPES))
@settings(max_examples=6, deadline=None, suppress_health_check=_QUIET)
@given(**_SEEDS)
def test_remove_dead_property_many_examples(name, seed, frac):
    _property(name, seed, frac)


def test_dead_through_depthwise_only_is_removed():
    name = "ds-cnn-s"
    net = _net(name)
    v = _kill(net, net.init(jax.random.key(0)), np.random.default_rng(0), 0.3, depthwise=True)
    new, widths = remove_dead(net, v, check=False)
    _assert_same(name, v, new, jax.random.key(1))
    assert widths["g0"] < 64


def test_residual_channel_dead_in_one_branch_only_is_kept():
    name = "cpreresnet20"
    net = _net(name)
    v = net.init(jax.random.key(0))
    k = v["params"]["s0b0_conv3"]["kernel"]
    v["params"]["s0b0_conv3"]["kernel"] = k.at[..., :8].set(0.0)  # s0b0_down still feeds them
    new, widths = remove_dead(net, v)
    assert widths["s0"] == 64
    v["params"]["s0b0_down"]["kernel"] = v["params"]["s0b0_down"]["kernel"].at[..., :8].set(0.0)
    v["params"]["s0b1_conv3"]["kernel"] = v["params"]["s0b1_conv3"]["kernel"].at[..., :8].set(0.0)
    new, widths = remove_dead(net, v)  # the stream is exactly 0 there now
    assert widths["s0"] < 64
    _assert_same(name, v, new, jax.random.key(2))


def test_same_padding_keeps_a_nonzero_constant_but_not_a_zero_one():
    name = "vgg16"
    net = _net(name)
    v = net.init(jax.random.key(0))
    v["params"]["conv0"]["kernel"] = v["params"]["conv0"]["kernel"].at[..., :2].set(0.0)
    v["params"]["norm0"]["bias"] = v["params"]["norm0"]["bias"].at[0].set(2.0).at[1].set(-2.0)
    new, widths = remove_dead(net, v)
    # channel 0 emits relu(2) into a 3x3 SAME conv: borders differ, so it stays
    assert widths["v0"] == 63
    np.testing.assert_array_equal(np.asarray(new["params"]["norm0"]["bias"])[0], 2.0)
    _assert_same(name, v, new, jax.random.key(3))


def test_graph_only_removes_only_zero_emitting_channels():
    name = "cnn-s"
    net = _net(name)
    v = net.init(jax.random.key(0))
    v["params"]["conv0"]["kernel"] = v["params"]["conv0"]["kernel"].at[..., :3].set(0.0)
    v["params"]["conv0"]["bias"] = v["params"]["conv0"]["bias"].at[2].set(1.0)
    new, widths = remove_dead(net.graph, v)
    assert widths["c0"] == 26  # channel 2 emits a constant; without the Net it is kept
    _assert_same(name, v, new, jax.random.key(4))
    new2, widths2 = remove_dead(net, v)
    assert widths2["c0"] == 25
    _assert_same(name, v, new2, jax.random.key(5))


def test_refusals_are_clear():
    net = subnets.zoo.create("vgg16", num_classes=5, input_shape=(8, 8, 3), norm="group")
    v = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"norm params/norm0 .*GroupNorm"):
        remove_dead(net, v)
    with pytest.raises(TypeError, match="model or a ChannelGraph"):
        remove_dead(v, {"not": "a graph"})
    bad = {"params": {**v["params"], "conv0": {**v["params"]["conv0"],
                                               "bias": jnp.zeros(3)}}}
    with pytest.raises(ValueError, match="conv0/bias"):
        remove_dead(_net("vgg16"), bad)


def test_old_argument_order_warns_and_agrees():
    net = _net("dnn-s")
    v = net.init(jax.random.key(0))
    v["params"]["dense0"]["kernel"] = v["params"]["dense0"]["kernel"].at[:, :5].set(0.0)
    new, widths = remove_dead(net, v)
    with pytest.warns(DeprecationWarning, match="remove_dead\\(model_or_graph, variables\\)"):
        old, widths_old = remove_dead(v, net)
    assert widths == widths_old and widths["h0"] == 139
    for (p, a), (_, b) in zip(leaf_paths(new), leaf_paths(old), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg="/".join(p))
