"""Tests for subnets.subspace.compress: gamma maps, the three compressions, deployment."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import subnets
from subnets import subspace
from subnets.subspace.compress import quantized_paths
from subnets.transforms import prunable_paths


def random_variables(net, seed=0):
    """Random weights at the net's shapes without running (and compiling) its init."""
    shapes = jax.eval_shape(net.init, jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def reference_bits(alpha, low=3, high=8):
    """The reference's alpha_bit_map, transcribed as a loop (an independent oracle)."""
    n = high - low + 1
    for i in range(n):
        if i / n <= alpha <= (i + 1) / n:
            return low + i


@pytest.mark.parametrize("alpha", [0.0, 0.1, 1 / 6, 0.2, 0.5, 0.51, 5 / 6, 0.9, 1.0])
def test_quantized_gamma_matches_reference(alpha):
    comp = subspace.quantized()
    assert int(comp.gamma(alpha)) == reference_bits(alpha)


def test_quantized_alpha_of_inverts_gamma():
    comp = subspace.quantized()
    for b in range(3, 9):
        assert int(comp.gamma(comp.alpha_of(b))) == b


@settings(max_examples=30, deadline=None)
@given(width=st.floats(0.01, 1.0))
def test_channel_counts_traced_equals_python(width):
    net = subnets.zoo.create("cnn-s", num_classes=12)
    py = subspace.channel_counts(net.graph, width)
    tr = subspace.channel_counts(net.graph, jnp.float32(width))
    assert py == {k: int(v) for k, v in tr.items()}
    assert all(1 <= k <= net.graph[g].size for g, k in py.items())


def test_structured_gamma_inverse():
    comp = subspace.structured(subnets.zoo.create("dnn-s", num_classes=3).graph)
    assert float(comp.gamma(0.0)) == 0.25 and float(comp.gamma(1.0)) == 1.0
    np.testing.assert_allclose(comp.alpha_of(comp.gamma(0.3)), 0.3, rtol=1e-6)


def test_structured_deploy_equals_slice_widths_through_a_flatten():
    net = subnets.zoo.create("cnn-s", num_classes=12)
    v = random_variables(net)
    width = 1 / 3
    widths = subspace.channel_counts(net.graph, width)
    a = subspace.structured(net.graph).deploy(v, width)
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(a))
    b = subnets.slice_widths(net.graph, v, widths)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, np.asarray(y)), a, b)
    net.graph.validate(a, widths=widths)


def test_structured_deploy_equals_masked_training_network():
    net = subnets.zoo.create("vision-ds-cnn", num_classes=5, input_shape=(8, 8, 1),
                             norm="instance")
    s = subspace.point(random_variables(net))
    comp = subspace.structured(net.graph)
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 1)).astype(np.float32)
    masked = jax.jit(lambda v, w: net.apply(comp.compress(v, w), x))
    act = jax.jit(lambda v, w: subspace.masked_apply(net, v, x,
                                                     subspace.channel_counts(net.graph, w)))
    sliced = jax.jit(lambda v: net.apply(v, x))
    for width in (0.25, 0.6):
        small = subspace.at_level(s, net, width=width)
        counts = subspace.channel_counts(net.graph, width)
        net.graph.validate(small, widths=counts)
        ref = masked(s.base, jnp.float32(width))
        np.testing.assert_allclose(sliced(small), ref, rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(act(s.base, jnp.float32(width)), ref, rtol=2e-4, atol=2e-4)


@settings(max_examples=8, deadline=None)
@given(density=st.floats(0.02, 1.0))
def test_unstructured_any_density(density):
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    v = random_variables(net)
    s = subspace.point(v, compression="unstructured")
    out = subspace.at_level(s, net, density=density, out_of_range="allow")
    order = prunable_paths(v, net.graph)
    for p in order:
        w, k = subnets.graph.get_path(out, p), subnets.graph.get_path(v, p)
        if p in (order[0], order[-1]):
            np.testing.assert_array_equal(w, k)  # stem and classifier stay dense
        else:
            assert np.count_nonzero(w) == max(1, round(np.float32(density) * k.size))


@pytest.mark.parametrize("bits", [2, 3, 5, 8, 12])
def test_quantized_any_bits(bits):
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    v = random_variables(net)
    out = subspace.at_level(subspace.point(v, compression="quantized"), net, bits=bits,
                            out_of_range="allow")
    inner = quantized_paths(v, net.graph)
    assert inner and len(inner) == len(prunable_paths(v, net.graph)) - 2
    for p in prunable_paths(v, net.graph):
        w = subnets.graph.get_path(out, p)
        if p in inner:
            assert len(np.unique(w)) <= 2 ** bits
            assert np.abs(w - subnets.graph.get_path(v, p)).max() > 0
        else:
            np.testing.assert_array_equal(w, subnets.graph.get_path(v, p))


def test_at_level_errors():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    s = subspace.point(random_variables(net), compression="unstructured")
    with pytest.raises(ValueError, match="exactly one"):
        subspace.at_level(s, net, density=0.5, bits=4)
    with pytest.raises(ValueError, match="trained for unstructured.*density="):
        subspace.at_level(s, net, width=0.5)
    with pytest.raises(ValueError, match="density must be in"):
        subspace.at_level(s, net, density=1.5, out_of_range="allow")
    with pytest.raises(ValueError, match=r"density 1.5 is outside the trained range"):
        subspace.at_level(s, net, density=1.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        subspace.at(s, net, 2.0)
    q = subspace.point(s.base, compression="quantized")
    with pytest.raises(ValueError, match="bits must be an integer"):
        subspace.at_level(q, net, bits=1, out_of_range="allow")


def test_act_quant_apply():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    v = random_variables(net)
    x = np.random.default_rng(2).normal(size=(16, 8)).astype(np.float32)
    ref = net.apply(v, x)
    off = subspace.act_quant_apply(net, v, x, 2, enabled=False)
    np.testing.assert_allclose(off, ref, rtol=1e-6)
    fine = subspace.act_quant_apply(net, v, x, 16)
    coarse = subspace.act_quant_apply(net, v, x, 2)
    assert np.abs(fine - ref).max() < 1e-2 * np.abs(ref).max()
    assert np.abs(coarse - ref).max() > 10 * np.abs(fine - ref).max()


def test_act_quant_running_ranges_make_outputs_batch_independent():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    v = random_variables(net)
    x = np.random.default_rng(3).normal(size=(16, 8)).astype(np.float32)
    s = subspace.init_act_ranges(net, subspace.point(v, compression="quantized"), x)
    ranges = s.base[subspace.ACT_RANGES]
    assert sorted(ranges) == ["dense1", "dense2"]  # stem and classifier inputs stay float
    for lo, hi in ranges.values():
        assert lo <= hi
    fn = jax.jit(lambda vv, xx: subspace.act_quant_apply(net, vv, xx, 3))
    # With fixed ranges an example's output does not depend on the rest of its batch.
    whole = np.asarray(fn(s.base, x))
    alone = np.concatenate([np.asarray(fn(s.base, x[i:i + 1])) for i in range(4)])
    np.testing.assert_allclose(alone, whole[:4], rtol=1e-5, atol=1e-6)
    batch_range = np.asarray(fn(v, x))  # no ranges: each batch's own min/max
    single = np.asarray(fn(v, x[:1]))
    assert np.abs(single - batch_range[:1]).max() > 1e-4
    # Given ranges are used: a much wider range quantises more coarsely.
    wide = {k: np.array([-100.0, 100.0], np.float32) for k in ranges}
    coarse = subspace.act_quant_apply(net, v, x, 3, ranges=wide)
    ref = net.apply(v, x)
    assert np.abs(coarse - ref).max() > np.abs(whole - ref).max()


def test_init_act_ranges_only_for_quantized():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    with pytest.raises(ValueError, match="quantized"):
        subspace.init_act_ranges(net, subspace.point(random_variables(net)), np.ones((2, 8)))


def test_act_quant_reaches_depthwise_inputs():
    net = subnets.zoo.create("vision-ds-cnn", num_classes=5, input_shape=(8, 8, 1))
    v = net.init(jax.random.key(0))  # positive running variances
    x = np.random.default_rng(4).normal(size=(4, 8, 8, 1)).astype(np.float32)
    _, seen = subspace.act_quant_apply(net, v, x, 8, observe=True)
    dws = [".".join(lay.path[1:-1]) for lay in net.graph.layers if lay.kind == "depthwise"]
    assert set(dws) <= set(seen) and "stem" not in seen and "classifier" not in seen
    # only dw1's range differs between the two runs: its input is quantised, so outputs differ
    ranges = {k: np.asarray(r) for k, r in seen.items()}
    wide = {**ranges, "dw1": np.array([-1e3, 1e3], np.float32)}
    a = np.asarray(subspace.act_quant_apply(net, v, x, 3, ranges=ranges))
    b = np.asarray(subspace.act_quant_apply(net, v, x, 3, ranges=wide))
    assert np.abs(a - b).max() > 1e-3


def test_output_groups_by_roles():
    net = subnets.zoo.create("ds-cnn-s", num_classes=4)
    groups = subspace.output_groups(net.graph)
    assert groups[("params", "stem", "kernel")] == "g0"
    assert groups[("params", "dw0", "kernel")] == "g0"  # depthwise: its output is its input
    assert groups[("params", "pw0_norm")] == "g1"
    assert ("params", "classifier", "kernel") not in groups  # the logits' group is fixed
    with pytest.warns(DeprecationWarning):
        assert subspace.output_groups(net.init(jax.random.key(0)), net.graph) == groups
