"""Pruning at initialisation: each score checked against its definition, masks at density."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from subnets.zoo.kws import DNNConfig, make_dnn

import subnets
from subnets.graph import get_path, set_paths
from subnets.pruning.pai import METHODS, layer_density, pai_masks, prune_at_init, scores


@pytest.fixture(scope="module")
def tiny():
    net = make_dnn("tiny", DNNConfig((5, 4)), 3, (6,), "none")
    v = net.init(jax.random.key(0))
    # Non-zero biases, so the hand computations below are not trivially the same.
    v = set_paths(v, {("params", "dense0", "bias"): jnp.linspace(-0.3, 0.4, 5)})
    x = jax.random.normal(jax.random.key(1), (7, 6))
    y = jnp.arange(7) % 3
    return net, v, x, y


def _paths(net):
    return [layer.path for layer in net.graph.layers]


def _loss(net, v, paths, x, y, temperature=1.0):
    def f(ks):
        vv = set_paths(v, dict(zip(paths, ks, strict=True)))
        return optax.softmax_cross_entropy_with_integer_labels(
            net.apply(vv, x) / temperature, y).mean()
    return f


def test_snip_is_abs_grad_times_weight(tiny):
    net, v, x, y = tiny
    paths = _paths(net)
    ks = [get_path(v, p) for p in paths]
    g = jax.jit(jax.grad(_loss(net, v, paths, x, y)))(ks)
    s = scores(net, v, x, y, method="snip")
    for p, w, gi in zip(paths, ks, g, strict=True):
        np.testing.assert_allclose(s[p], np.abs(np.asarray(w) * np.asarray(gi)), rtol=1e-5,
                                   atol=1e-8)


def test_grasp_is_weight_times_explicit_hessian_gradient(tiny):
    net, v, x, y = tiny
    paths = _paths(net)
    ks = [get_path(v, p) for p in paths]
    flat, unravel = jax.flatten_util.ravel_pytree(ks)
    loss = lambda f: _loss(net, v, paths, x, y, temperature=200.0)(unravel(f))
    hg = jax.jit(lambda f: jax.hessian(loss)(f) @ jax.grad(loss)(f))(flat)
    expect = np.asarray(flat * hg)
    expect = expect / np.abs(expect.sum())
    got = np.concatenate([np.ravel(scores(net, v, x, y, method="grasp")[p]) for p in paths])
    np.testing.assert_allclose(got, expect, rtol=1e-3, atol=1e-6 * np.abs(expect).max())


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_synflow_conserves_flow_per_layer(norm):
    # Theorem (Tanaka et al.): on a positively homogeneous feed-forward net every layer's
    # scores sum to the same R; BatchNorm (with non-trivial statistics) is made the identity.
    net = subnets.zoo.create("dnn-s", num_classes=12, norm=norm)
    v = net.init(jax.random.key(3))
    if norm == "batch":
        v = set_paths(v, {("batch_stats", "norm0", "var"): jnp.full(144, 9.0),
                          ("params", "norm1", "bias"): jnp.full(144, -5.0)})
    s = scores(net, v, method="synflow")
    sums = np.array([float(np.sum(a, dtype=np.float64)) for a in s.values()])
    assert np.all(sums > 0)
    np.testing.assert_allclose(sums, sums[0], rtol=2e-3)


def test_magnitude_and_random(tiny):
    net, v, _, _ = tiny
    s = scores(net, v, method="magnitude")
    for p in _paths(net):
        np.testing.assert_array_equal(s[p], np.abs(np.asarray(get_path(v, p))))
    a = scores(net, v, method="random", key=jax.random.key(0))
    b = scores(net, v, method="random", key=jax.random.key(0))
    c = scores(net, v, method="random", key=jax.random.key(1))
    p = _paths(net)[0]
    np.testing.assert_array_equal(a[p], b[p])
    assert not np.array_equal(a[p], c[p])


@settings(max_examples=30, deadline=None)
@given(density=st.floats(0.001, 1.0), scope=st.sampled_from(["global", "layer"]),
       sizes=st.lists(st.integers(1, 60), min_size=1, max_size=4),
       seed=st.integers(0, 2**16), ties=st.booleans())
def test_masks_hit_target_density(density, scope, sizes, seed, ties):
    rng = np.random.default_rng(seed)
    s = {(f"l{i}",): (rng.integers(0, 3, n) if ties else rng.normal(size=n)).astype(np.float32)
         for i, n in enumerate(sizes)}
    m = pai_masks(s, density, scope=scope, floor=None, warn=False)
    if scope == "global":
        total = sum(sizes)
        assert sum(int(a.sum()) for a in m.values()) == max(1, round(density * total))
    else:
        for a in m.values():
            assert int(a.sum()) == max(1, round(density * a.size))
    # Everything kept scores at least as high as everything dropped (in its ranking pool).
    pools = [list(m)] if scope == "global" else [[p] for p in m]
    for pool in pools:
        kept = np.concatenate([s[p][m[p]] for p in pool])
        dropped = np.concatenate([s[p][~m[p]] for p in pool])
        if kept.size and dropped.size:
            assert kept.min() >= dropped.max()


@pytest.mark.parametrize("method", METHODS)
def test_prune_at_init_exact_density_every_method(tiny, method):
    net, v, x, y = tiny
    m = prune_at_init(net, v, x, y, density=0.3, method=method, key=jax.random.key(0),
                      rounds=4 if method == "synflow" else None)
    total = sum(a.size for a in m.values())
    assert sum(int(a.sum()) for a in m.values()) == round(0.3 * total)
    assert set(m) == set(_paths(net))


def test_pruned_weights_stay_pruned_across_rounds(tiny):
    net, v, _, _ = tiny
    first = prune_at_init(net, v, density=0.5, method="synflow", rounds=1)
    s = scores(net, v, method="synflow", masks=first)
    second = pai_masks(s, 0.25)
    for p in first:
        assert not np.any(second[p] & ~first[p])
        assert np.all(np.isneginf(s[p][~first[p]]))


def test_iterative_synflow_avoids_collapse_better_than_one_shot():
    # The reason SynFlow iterates: one-shot pruning at extreme density starves some layer.
    net = subnets.zoo.create("dnn-s", num_classes=12)
    v = net.init(jax.random.key(0))
    it = layer_density(prune_at_init(net, v, density=0.002, method="synflow", rounds=20))
    assert min(it.values()) > 0


def test_clear_errors(tiny):
    net, v, x, y = tiny
    with pytest.raises(ValueError, match="unknown PaI score"):
        scores(net, v, method="l2")
    with pytest.raises(ValueError, match="needs key"):
        scores(net, v, method="random")
    with pytest.raises(ValueError, match="needs a batch"):
        scores(net, v, method="snip")
    with pytest.raises(ValueError, match="density"):
        pai_masks({("a",): np.ones(3)}, 0.0)
    with pytest.raises(ValueError, match="scope"):
        pai_masks({("a",): np.ones(3)}, 0.5, scope="net")
    with pytest.raises(KeyError, match="params/nope/kernel"):
        scores(net, v, prunable=[("params", "nope", "kernel")])


def test_synflow_on_a_linen_model_reads_roles_not_names():
    # Own leaf names ("w", "b"), BatchNorm with non-trivial statistics and shifts: SynFlow's
    # conservation law holds only if the linearised net found every kernel, bias, shift and
    # statistic through the graph's roles.
    from _linen_mlp import linen_mlp

    net = linen_mlp()
    v = net.init(jax.random.key(0))
    v = set_paths(v, {("batch_stats", "bn_0", "mean"): jnp.full(24, 2.0),
                      ("batch_stats", "bn_0", "var"): jnp.full(24, 9.0),
                      ("params", "bn_1", "bias"): jnp.full(16, -5.0),
                      ("params", "fc_1", "b"): jnp.full(16, 3.0)})
    s = scores(net, v, method="synflow")
    assert sorted(s) == sorted(layer.path for layer in net.graph.layers)
    sums = np.array([float(np.sum(a, dtype=np.float64)) for a in s.values()])
    assert np.all(sums > 0)
    np.testing.assert_allclose(sums, sums[0], rtol=2e-3)
    m = prune_at_init(net, v, density=0.3, method="synflow", rounds=5)
    total = sum(a.size for a in m.values())
    assert int(sum(a.sum() for a in m.values())) == round(0.3 * total)
