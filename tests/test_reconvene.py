"""Reconvene: sensitivity evaluation, rectification through the channel graph, masked training."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import subnets
from subnets import pruning, train
from subnets.graph import get_path
from subnets.pruning.pai import prune_at_init
from subnets.pruning.reconvene import default_prunable, reconvene, structured_init


@pytest.fixture(scope="module")
def dnn():
    net = subnets.zoo.create("dnn-s", num_classes=4, norm="batch")
    return net, net.init(jax.random.key(0))


def _writers(graph):
    out = {}
    for layer in graph.layers:
        out.setdefault(layer.out_group, []).append(layer.path)
    return out


def test_sensitivity_and_rectification_rules(dnn):
    net, v = dnn
    r = reconvene(net, v, density=0.2, method="magnitude", key=jax.random.key(1))
    masks = prune_at_init(net, v, density=0.2, method="magnitude",
                          prunable=default_prunable(net))
    assert ("params", "dense3", "kernel") not in masks  # the classifier is not pruned
    kept = {p: m.mean() for p, m in masks.items()}
    glob = 1 - r.report["global_sparsity"]
    assert glob == pytest.approx(0.2, abs=1e-4)
    writers = _writers(net.graph)
    for g in net.graph.free:
        ws = writers[g.name]
        if all(kept[p] < glob for p in ws):
            # Resilient: narrowed to ceil(layer density * width), dense, no mask.
            assert r.widths[g.name] == math.ceil(max(kept[p] for p in ws) * g.size)
            assert all(p not in r.masks for p in ws)
            assert all(np.all(np.asarray(get_path(r.variables, p)) != 0) for p in ws)
        else:
            assert r.widths[g.name] == g.size
    assert any(r.widths[g.name] < g.size for g in net.graph.free)
    for row in r.report["layers"].values():
        assert row["resilient"] == (row["sparsity"] > r.report["global_sparsity"])
    net.graph.validate(r.variables, widths=r.widths)
    assert subnets.cost.params(net, r.widths) == r.report["params_dense"]


def test_sensitive_layers_keep_their_masks_and_zeros(dnn):
    net, v = dnn
    r = reconvene(net, v, density=0.2, key=jax.random.key(1))
    assert r.masks, "some layer must stay sparse"
    for p, m in r.masks.items():
        w = np.asarray(get_path(r.variables, p))
        assert m.shape == w.shape and m.dtype == bool
        assert np.all(w[~m] == 0)
        assert np.all(w[m] != 0)


def test_rectified_kernels_are_kaiming(dnn):
    net, v = dnn
    r = reconvene(net, v, density=0.2, key=jax.random.key(1))
    rect = [tuple(n.split("/")) for n, row in r.report["layers"].items()
            if row["action"].startswith("rectified")]
    assert rect and not any(p in r.masks for p in rect)
    for p in rect:
        w = np.asarray(get_path(r.variables, p))
        fan_in = w.size // w.shape[-1]
        assert np.std(w) == pytest.approx(math.sqrt(2 / fan_in), rel=0.15)


def test_alive_rule_is_never_narrower(dnn):
    net, v = dnn
    a = reconvene(net, v, density=0.2, width="alive", key=jax.random.key(1))
    d = reconvene(net, v, density=0.2, width="density", key=jax.random.key(1))
    assert all(a.widths[g] >= d.widths[g] for g in d.widths)
    with pytest.raises(ValueError, match="width"):
        reconvene(net, v, density=0.2, width="half", key=jax.random.key(1))


def test_residual_stream_narrows_as_a_whole_or_not_at_all():
    net = subnets.zoo.create("cpreresnet20", num_classes=10, input_shape=(8, 8, 3))
    # Random arrays of init's shapes: Flax's eager init of 23 layers costs far more here.
    rng = np.random.default_rng(0)
    v = jax.tree.map(lambda s: np.abs(rng.normal(size=s.shape)).astype(np.float32) * 0.1,
                     jax.eval_shape(net.init, jax.random.key(0)))
    r = reconvene(net, v, density=0.1, key=jax.random.key(2))
    net.graph.validate(r.variables, widths=r.widths)
    writers = _writers(net.graph)
    for s in ("s0", "s1", "s2"):
        ws = writers[s]
        assert len(ws) == 3  # projection + two blocks' last convs
        if r.widths[s] < net.graph[s].size:
            assert all(p not in r.masks for p in ws)
        else:
            assert all(p in r.masks for p in ws)
    assert any(r.widths[g.name] < g.size for g in net.graph.free)
    out = jax.jit(net.apply)(r.variables, jnp.ones((2, 8, 8, 3)))
    assert out.shape == (2, 10) and bool(jnp.all(jnp.isfinite(out)))


def test_train_once_keeps_sparse_layers_sparse(dnn):
    net, v = dnn
    r = reconvene(net, v, density=0.2, key=jax.random.key(1))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 250)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    tx = pruning.masked(optax.adam(1e-2), r.masks)
    out = train.fit(net, r.variables, x, y, epochs=2, batch_size=16, tx=tx,
                    key=jax.random.key(0), progress=False)
    for p, m in r.masks.items():
        w = np.asarray(get_path(out, p))
        assert np.all(w[~m] == 0)
        assert not np.array_equal(w, np.asarray(get_path(r.variables, p)))


def test_structured_init_hits_density(dnn):
    net, _ = dnn
    v, w = structured_init(net, density=0.25, key=jax.random.key(0))
    net.graph.validate(v, widths=w)
    kernels = {layer.path for layer in net.graph.layers}
    full = sum(math.prod(s) for p, s in subnets.cost.array_shapes(net).items() if p in kernels)
    got = sum(np.size(get_path(v, p)) for p in kernels)
    assert got / full == pytest.approx(0.25, abs=0.03)


def test_reconvene_and_structured_init_on_a_linen_model():
    # A Linen model outside the zoo (own leaf names "w"/"b", BatchNorm): no zoo attribute.
    from _linen_mlp import linen_mlp

    net = linen_mlp()
    v = net.init(jax.random.key(0))
    r = reconvene(net, v, density=0.2, key=jax.random.key(1), rounds=5)
    assert set(r.widths) == {g.name for g in net.graph.free}
    net.graph.validate(r.variables, widths=r.widths)
    narrowed = [g for g, w in r.widths.items() if w < net.graph[g].size]
    assert narrowed
    x = np.ones((2, 10), np.float32)
    assert net.apply(r.variables, x).shape == (2, 3)
    assert subnets.cost.params(net, r.widths) == r.report["params_dense"]
    v2, w2 = structured_init(net, density=0.25, key=jax.random.key(2))
    net.graph.validate(v2, widths=w2)
    assert net.apply(v2, x).shape == (2, 3)
    k = np.asarray(v2["params"]["fc_1"]["w"])
    assert k.std() == pytest.approx(math.sqrt(2.0 / k.shape[0]), rel=0.3)
