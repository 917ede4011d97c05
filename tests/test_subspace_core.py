"""Tests for subnets.subspace.core: subspaces, interpolation, the cos^2 regulariser."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subnets import subspace
from subnets.graph import get_path


def toy(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(np.float32)
    return {"params": {"d0": {"kernel": f(3, 4), "bias": f(4)},
                       "n0": {"scale": f(4), "bias": f(4)},
                       "d1": {"kernel": f(4, 2), "bias": f(2)}}}


def test_line_paths_structured_only_norms():
    v = toy(0)
    assert subspace.line_paths(None, v, "structured") == [("params", "n0", "scale"),
                                                   ("params", "n0", "bias")]
    assert len(subspace.line_paths(None, v, "unstructured")) == 6


def test_point_has_no_end_and_weights_are_base():
    v = toy(0)
    s = subspace.point(v)
    assert s.kind == "point" and s.end == {}
    assert subspace.weights(s, 0.7) is s.base
    assert float(subspace.regulariser(s)) == 0.0


@settings(max_examples=25, deadline=None)
@given(alpha=st.floats(0.0, 1.0), comp=st.sampled_from(["structured", "unstructured"]))
def test_weights_are_the_line(alpha, comp):
    v0, v1 = toy(0), toy(1)
    s = subspace.line(v0, v1, compression=comp)
    w = subspace.weights(s, alpha)
    lines = set(subspace.line_paths(None, v0, comp))
    for p in [("params", m, k) for m in v0["params"] for k in v0["params"][m]]:
        expect = get_path(v0, p)
        if p in lines:
            expect = (1 - alpha) * get_path(v0, p) + alpha * get_path(v1, p)
        np.testing.assert_allclose(get_path(w, p), expect, rtol=1e-5, atol=1e-6)


def test_line_endpoints():
    v0, v1 = toy(0), toy(1)
    s = subspace.line(v0, v1, compression="unstructured")
    for p in subspace.line_paths(None, v0, "unstructured"):
        np.testing.assert_allclose(get_path(subspace.weights(s, 0.0), p), get_path(v0, p))
        np.testing.assert_allclose(get_path(subspace.weights(s, 1.0), p), get_path(v1, p))


def test_regulariser_is_one_global_cosine_over_kernels_and_scales():
    v0, v1 = toy(0), toy(1)
    s = subspace.line(v0, v1, compression="unstructured")
    keys = [("d0", "kernel"), ("n0", "scale"), ("d1", "kernel")]
    a = np.concatenate([v0["params"][m][k].ravel() for m, k in keys])
    b = np.concatenate([v1["params"][m][k].ravel() for m, k in keys])
    expect = (a @ b) ** 2 / ((a @ a) * (b @ b))
    np.testing.assert_allclose(float(subspace.regulariser(s)), expect, rtol=1e-5)
    same = subspace.line(v0, v0, compression="unstructured")
    np.testing.assert_allclose(float(subspace.regulariser(same)), 1.0, rtol=1e-5)


def test_line_errors_name_the_path():
    v0, v1 = toy(0), toy(1)
    v1["params"]["n0"]["scale"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="n0/scale"):
        subspace.line(v0, v1)
    del v1["params"]["n0"]
    with pytest.raises(ValueError, match="n0"):
        subspace.line(v0, v1)
    no_norm = {"params": {"d0": {"kernel": np.ones((2, 2))}}}
    with pytest.raises(ValueError, match="no structured line leaves"):
        subspace.line(no_norm, no_norm)


@pytest.mark.parametrize("kwargs,match", [
    ({"compression": "pruned"}, "compression must be one of"),
    ({"compression": "structured", "low": 0.0}, "0 < low <= high <= 1"),
    ({"compression": "unstructured", "low": 0.9, "high": 0.5}, "low <= high"),
    ({"compression": "quantized", "low": 1}, "2 <= low <= high <= 16"),
    ({"compression": "quantized", "low": 3.5}, "integers"),
])
def test_bad_ranges(kwargs, match):
    with pytest.raises(ValueError, match=match):
        subspace.point(toy(0), **kwargs)


def test_init_line_draws_independent_kernels():
    import jax

    import subnets

    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    s = subspace.init_line(net, key=jax.random.key(0), compression="unstructured")
    k0 = np.asarray(s.base["params"]["dense1"]["kernel"])
    k1 = np.asarray(s.end["params"]["dense1"]["kernel"])
    assert k0.shape == k1.shape and not np.allclose(k0, k1)
    assert float(subspace.regulariser(s)) < 0.05  # independent draws are near-orthogonal


def test_line_paths_and_regulariser_read_the_graph():
    import jax

    import subnets

    net = subnets.zoo.create("cnn-s", num_classes=3)
    v = net.init(jax.random.key(0))
    norms = [p for n in net.graph.norms for p in (n.scale, n.shift)]
    assert sorted(subspace.line_paths(net.graph, v, "structured")) == sorted(norms)
    with pytest.warns(DeprecationWarning, match="line_paths\\(graph, variables"):
        assert subspace.line_paths(v, "structured") == subspace.line_paths(
            net.graph, v, "structured")
    s = subspace.init_line(net, key=jax.random.key(1), compression="unstructured")
    kernels = {lay.path for lay in net.graph.layers}
    scales = {n.scale for n in net.graph.norms}
    assert set(s.cosine) == kernels | scales
    a = np.concatenate([np.ravel(get_path(s.base, p)) for p in s.cosine])
    b = np.concatenate([np.ravel(get_path(s.end, p)) for p in s.cosine])
    expect = (a @ b) ** 2 / ((a @ a) * (b @ b))
    np.testing.assert_allclose(float(subspace.regulariser(s)), expect, rtol=1e-4)
    structured = subspace.init_line(net, key=jax.random.key(1))
    assert set(structured.cosine) == scales
