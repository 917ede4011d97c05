import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import subnets
from subnets.transforms import fake_quant, interpolate, topk_mask, topk_masks


def _toy():
    rng = np.random.default_rng(0)
    return {"params": {"a": {"kernel": rng.normal(size=(3, 5)).astype(np.float32)},
                       "b": {"kernel": rng.normal(size=(5, 6)).astype(np.float32),
                             "bias": np.ones(6, np.float32)},
                       "c": {"kernel": rng.normal(size=(6, 2)).astype(np.float32)}}}


@settings(max_examples=20)
@given(density=st.floats(0.01, 1.0))
def test_topk_keeps_largest_per_layer_and_skips_first_last(density):
    v = _toy()
    out = topk_mask(v, density)
    w, kept = v["params"]["b"]["kernel"], np.asarray(out["params"]["b"]["kernel"])
    k = max(1, round(density * w.size))
    assert (kept != 0).sum() == k
    # every kept magnitude >= every dropped magnitude
    nz = np.abs(w[kept != 0])
    z = np.abs(w[kept == 0])
    assert z.size == 0 or nz.min() >= z.max()
    np.testing.assert_array_equal(out["params"]["a"]["kernel"], v["params"]["a"]["kernel"])
    np.testing.assert_array_equal(out["params"]["c"]["kernel"], v["params"]["c"]["kernel"])
    np.testing.assert_array_equal(out["params"]["b"]["bias"], v["params"]["b"]["bias"])


def test_topk_traced_density_vmaps_and_exclude_none():
    v = _toy()
    dens = jnp.array([0.2, 0.6])
    counts = jax.vmap(lambda d: sum(m.sum() for m in topk_masks(v, d, exclude=None).values()))(dens)
    assert counts[0] < counts[1]
    assert set(topk_masks(v, 0.5, exclude=None)) == {("params", n, "kernel") for n in "abc"}


def test_topk_gradient_only_through_kept_weights():
    v = _toy()
    g = jax.grad(lambda p: topk_mask({"params": p}, 0.3)["params"]["b"]["kernel"].sum())(
        v["params"])
    kept = np.asarray(topk_mask(v, 0.3)["params"]["b"]["kernel"]) != 0
    np.testing.assert_array_equal(np.asarray(g["b"]["kernel"]) != 0, kept)


@settings(max_examples=25)
@given(bits=st.integers(2, 8), seed=st.integers(0, 1000))
def test_fake_quant_levels_zero_and_error(bits, seed):
    x = jax.random.normal(jax.random.key(seed), (200,)) * 3
    q = np.asarray(fake_quant(x, bits))
    assert np.unique(q).size <= 2**bits
    scale = (max(x.max(), 0) - min(x.min(), 0)) / (2**bits - 1)
    assert np.abs(q - np.asarray(x)).max() <= scale * 0.5 + 1e-5
    assert float(fake_quant(jnp.array([0.0, 1.0, -2.0]), bits)[0]) == 0.0


def test_fake_quant_straight_through():
    x = jnp.linspace(-1, 1, 11)
    g = jax.grad(lambda x: (fake_quant(x, 3) * jnp.arange(11.0)).sum())(x)
    np.testing.assert_allclose(g, jnp.arange(11.0))


def test_interpolate_endpoints_and_midpoint():
    a = {"w": jnp.zeros(3)}
    b = {"w": jnp.ones(3) * 2}
    assert float(interpolate(a, b, 0.0)["w"].sum()) == 0
    assert float(interpolate(a, b, 1.0)["w"].sum()) == 6
    assert float(interpolate(a, b, 0.25)["w"][0]) == 0.5


def test_permute_inverse_roundtrip_and_errors():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(10,))
    v = net.init(jax.random.key(0))
    p = {"h1": np.random.default_rng(1).permutation(144)}
    back = subnets.permute(net.graph, subnets.permute(net.graph, v, p), {"h1": np.argsort(p["h1"])})
    jax.tree.map(np.testing.assert_array_equal, back, v)
    with pytest.raises(ValueError, match="fixed group 'out'"):
        subnets.permute(net.graph, v, {"out": np.arange(3)})
    with pytest.raises(ValueError, match=r"perm for group 'h0' has shape \(3,\)"):
        subnets.permute(net.graph, v, {"h0": np.arange(3)})


def test_slice_is_prefix_of_every_member():
    net = subnets.zoo.create("cnn-s", num_classes=12)
    v = net.init(jax.random.key(0))
    s = subnets.slice_widths(net.graph, v, {"c1": 5})
    lin = np.asarray(v["params"]["linear"]["kernel"]).reshape(64, 30, 16)
    np.testing.assert_array_equal(np.asarray(s["params"]["linear"]["kernel"]),
                                  lin[:, :5].reshape(64 * 5, 16))
    np.testing.assert_array_equal(s["params"]["conv1"]["kernel"],
                                  v["params"]["conv1"]["kernel"][..., :5])
    with pytest.raises(ValueError, match=r"width 31 for group 'c1' outside \[1, 30\]"):
        subnets.slice_widths(net.graph, v, {"c1": 31})


def test_old_argument_order_warns_and_agrees():
    net = subnets.zoo.create("cnn-s", num_classes=4)
    v = net.init(jax.random.key(0))
    w, p = {"c1": 7}, {"c0": np.random.default_rng(0).permutation(28)}
    for fn, arg in ((subnets.slice_widths, w), (subnets.width_mask, w), (subnets.permute, p)):
        new = fn(net.graph, v, arg)
        with pytest.warns(DeprecationWarning, match=r"\(graph, variables"):
            old = fn(v, net.graph, arg)
        jax.tree.map(np.testing.assert_array_equal, old, new)
        # a model works in the graph's place
        jax.tree.map(np.testing.assert_array_equal, fn(net, v, arg), new)
    with pytest.raises(TypeError, match="ChannelGraph"):
        subnets.slice_widths(v, v, w)


def test_width_mask_zeroes_the_tail_of_every_member_concrete_and_traced():
    net = subnets.zoo.create("cnn-s", num_classes=4)
    v = net.init(jax.random.key(0))
    eager = subnets.width_mask(net.graph, v, {"c1": 5})
    traced = jax.jit(lambda w: subnets.width_mask(net.graph, v, {"c1": w}))(5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b), eager, traced)
    lin = np.asarray(eager["params"]["linear"]["kernel"]).reshape(64, 30, 16)
    assert not lin[:, 5:].any() and lin[:, :5].any()
    k = np.asarray(eager["params"]["conv1"]["kernel"])
    assert not k[..., 5:].any()
    np.testing.assert_array_equal(k[..., :5], v["params"]["conv1"]["kernel"][..., :5])


def test_prunable_paths_are_the_graph_layers():
    from subnets.graph import ChannelGraph, Group, Member
    from subnets.transforms import prunable_paths

    net = subnets.zoo.create("ds-cnn-s", num_classes=4, input_shape=(16, 8, 1))
    v = jax.eval_shape(net.init, jax.random.key(0))
    assert prunable_paths(net.graph) == [lay.path for lay in net.graph.layers]
    assert prunable_paths(net) == prunable_paths(net.graph)
    with pytest.warns(DeprecationWarning):
        assert prunable_paths(v, net.graph) == prunable_paths(net.graph)
    bare = ChannelGraph((Group("h", 3, (Member(("params", "k"), 1),)),))
    with pytest.raises(ValueError, match="no layers"):
        prunable_paths(bare)
    # graph-less: every >= 2-D parameter, whatever its leaf is called
    tree = {"params": {"a": {"w": np.zeros((2, 3))}, "b": {"g": np.zeros(3)}},
            "batch_stats": {"s": np.zeros((2, 2))}}
    assert prunable_paths(tree) == [("params", "a", "w")]
