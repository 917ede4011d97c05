"""Tests for subnets.importance: scores are the Taylor/L1 sums they claim, and permuting by
them keeps every zoo model's function."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import subnets
from subnets import importance
from subnets.graph import get_path, set_paths

PROPERTY_MODELS = ("dnn-s", "cnn-s", "ds-cnn-s", "cpreresnet20")


@functools.cache
def _jit_permute(graph):
    return jax.jit(lambda v, perms: subnets.permute(graph, v, perms))


@functools.cache
def _model(name: str):
    net = subnets.zoo.create(name, num_classes=5)
    # Random variables from the shapes alone: Flax init of the deeper models costs far more
    # than the test. Positive running variances, non-trivial means, so a mis-permuted norm
    # would show in eval mode.
    shapes = jax.eval_shape(net.init, jax.random.key(0))
    rng = np.random.default_rng(1)

    def fill(path, s):
        a = rng.normal(scale=0.3, size=s.shape).astype(np.float32)
        return np.abs(a) + 0.5 if path[-1].key == "var" else a

    v = jax.tree_util.tree_map_with_path(fill, shapes)
    x = rng.normal(size=(3,) + net.input_shape).astype(np.float32)
    return net, v, x, jax.jit(net.apply)


def _dnn():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(6,))
    v = net.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8).astype(np.int32)
    return net, v, x, y


@pytest.mark.parametrize("name", PROPERTY_MODELS)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
def test_permuting_by_importance_keeps_logits(name, seed):
    net, v, x, apply = _model(name)
    scores = importance.random(net.graph, key=jax.random.key(seed))
    permuted = _jit_permute(net.graph)(v, importance.permutation(scores))
    before, after = apply(v, x), apply(permuted, x)
    np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=1e-4, atol=1e-4)
    # A wrong permutation must be detectable: the arrays really moved.
    first = net.graph.free[0].members[0].path
    assert not np.array_equal(get_path(permuted, first), get_path(v, first))


def test_taylor_matches_manual_gradient():
    net, v, x, y = _dnn()
    scores = importance.taylor(net, v, [(x[:4], y[:4]), (x[4:], y[4:])])

    def loss(p, xb, yb):
        logits = net.apply({"params": p}, xb)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(yb)), yb])

    g = jax.tree.map(jnp.add, jax.grad(loss)(v["params"], x[:4], y[:4]),
                     jax.grad(loss)(v["params"], x[4:], y[4:]))
    p = v["params"]
    manual = (np.abs(p["dense1"]["kernel"] * g["dense1"]["kernel"]).sum(axis=0)
              + np.abs(p["dense1"]["bias"] * g["dense1"]["bias"]))
    np.testing.assert_allclose(scores["h1"], manual, rtol=1e-5, atol=1e-9)
    assert set(scores) == {"h0", "h1", "h2"} and scores["h0"].dtype == np.float64


def test_dead_unit_scores_zero():
    net, v, x, y = _dnn()
    p = v["params"]
    v = set_paths(v, {("params", "dense0", "kernel"): p["dense0"]["kernel"].at[:, 7].set(0.0),
                      ("params", "dense0", "bias"): p["dense0"]["bias"].at[7].set(0.0)})
    taylor = importance.taylor(net, v, [(x, y)])["h0"]
    norm = importance.l1(net.graph, v)["h0"]
    assert taylor[7] == 0.0 and norm[7] == 0.0
    assert (np.delete(norm, 7) > 0).all()
    assert (taylor > 0).sum() > len(taylor) // 2  # ReLU-dead units may also score 0


def test_l1_is_incoming_kernel_norm():
    net, v, _, _ = _model("ds-cnn-s")
    s = importance.l1(net.graph, v)
    p = v["params"]
    # g4 is written by pw3 only; g0 by the stem AND the depthwise conv of block 0.
    np.testing.assert_allclose(s["g4"], np.abs(p["pw3"]["kernel"]).sum(axis=(0, 1, 2)),
                               rtol=1e-6)
    expect_g0 = (np.abs(p["stem"]["kernel"]).sum(axis=(0, 1, 2))
                 + np.abs(p["dw0"]["kernel"]).sum(axis=(0, 1, 2)))
    np.testing.assert_allclose(s["g0"], expect_g0, rtol=1e-6)


def test_residual_stream_sums_producers():
    net, v, _, _ = _model("cpreresnet20")
    s = importance.l1(net.graph, v)
    p = v["params"]
    producers = ("s0b0_down", "s0b0_conv3", "s0b1_conv3")
    expect = sum(np.abs(p[n]["kernel"]).sum(axis=(0, 1, 2)) for n in producers)
    np.testing.assert_allclose(s["s0"], expect, rtol=1e-6)


def test_taylor_commutes_with_permutation():
    net, v, x, y = _dnn()
    scores = importance.taylor(net, v, [(x, y)])
    perms = importance.permutation(scores)
    permuted = subnets.permute(net.graph, v, perms)
    again = importance.taylor(net, permuted, [(x, y)])
    for g in scores:
        np.testing.assert_allclose(again[g], scores[g][perms[g]], rtol=1e-4, atol=1e-9)
        assert (np.diff(again[g]) <= 1e-6 * again[g].max()).all()


def test_permutation_is_stable_descending():
    perms = importance.permutation({"a": np.array([1.0, 3.0, 3.0, 2.0])})
    assert perms["a"].tolist() == [1, 2, 3, 0]


def test_random_is_keyed():
    graph = subnets.zoo.create("dnn-s", num_classes=2).graph
    a = importance.random(graph, key=jax.random.key(0))
    b = importance.random(graph, key=jax.random.key(0))
    c = importance.random(graph, key=jax.random.key(1))
    assert all(np.array_equal(a[g], b[g]) for g in a)
    assert not np.array_equal(a["h0"], c["h0"])


def test_kernel_scores_rows_sum_to_layer_contribution():
    net = subnets.zoo.create("ds-cnn-s", num_classes=4, input_shape=(16, 8, 1))
    v = net.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = (rng.normal(size=(4, 16, 8, 1)).astype(np.float32), np.arange(4) % 4)
    sal = importance.saliency(net, v, [batch])
    ks = importance.kernel_scores(net, v, saliency_tree=sal)
    assert sorted(ks) == [("params", f"pw{i}", "kernel") for i in range(4)]
    s = ks[("params", "pw2", "kernel")]
    assert s.shape == (64, 64)
    np.testing.assert_allclose(s.sum(axis=0), sal["params"]["pw2"]["kernel"].sum(axis=(0, 1, 2)))
    np.testing.assert_allclose(s[5, 9], sal["params"]["pw2"]["kernel"][0, 0, 5, 9])
    # Taylor score of g3 = pw2's kernel contribution + its bias and norm + block 3's
    # depthwise conv, which writes the same channels.
    taylor = importance.taylor(net, v, [batch])
    sp = sal["params"]
    extra = sum(sp[n][k] for n, k in (("pw2", "bias"), ("pw2_norm", "scale"),
                                      ("pw2_norm", "bias"), ("dw3", "bias"),
                                      ("dw3_norm", "scale"), ("dw3_norm", "bias")))
    extra = extra + sp["dw3"]["kernel"].sum(axis=(0, 1, 2))
    np.testing.assert_allclose(taylor["g3"], s.sum(axis=0) + extra, rtol=1e-5)


def test_empty_batches_rejected():
    net, v, _, _ = _dnn()
    with pytest.raises(ValueError, match="batches is empty"):
        importance.taylor(net, v, [])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=1, max_size=12),
                min_size=1, max_size=4))
def test_normalize_keeps_order_and_sets_mean_one(groups):
    scores = {f"g{i}": np.array(s) for i, s in enumerate(groups)}
    out = importance.normalize(scores)
    for g, s in scores.items():
        if s.mean() > 0:
            assert out[g].mean() == pytest.approx(1.0)
            np.testing.assert_array_equal(np.argsort(-out[g], kind="stable"),
                                          np.argsort(-s, kind="stable"))
        else:
            np.testing.assert_array_equal(out[g], s)


def test_pipeline_l1_scores_are_normalized():
    from subnets.nested.pipeline import score_channels

    net, v, x, _ = _model("ds-cnn-s")
    y = np.zeros(len(x), np.int32)
    s, _ = score_channels(net, v, "l1", x, y, key=jax.random.key(0))
    raw = importance.l1(net.graph, v)
    for g in raw:
        assert s[g].mean() == pytest.approx(1.0)
        np.testing.assert_allclose(s[g] * raw[g].mean(), raw[g], rtol=1e-9)


def test_l1_fold_norm_scores_the_deployed_kernel():
    # with eval-mode BatchNorm folded in, the kernel that runs is w * |scale| / sqrt(var + eps)
    net, v, _, _ = _model("ds-cnn-s")
    rng = np.random.default_rng(0)
    p, bs = v["params"], v["batch_stats"]
    for name in ("stem_norm", "dw0_norm", "pw3_norm"):
        c = p[name]["scale"].shape[0]
        v = set_paths(v, {("params", name, "scale"): rng.normal(size=c).astype(np.float32),
                          ("batch_stats", name, "var"): rng.uniform(0.1, 4, c)
                          .astype(np.float32)})
    p, bs = v["params"], v["batch_stats"]

    def folded(layer, norm):
        eps = net.graph.norm(("params", norm)).epsilon  # the model's own epsilon
        gain = np.abs(p[norm]["scale"]) / np.sqrt(bs[norm]["var"] + eps)
        return np.abs(p[layer]["kernel"]).sum(axis=(0, 1, 2)) * gain

    s = importance.l1(net.graph, v, fold_norm=True)
    np.testing.assert_allclose(s["g4"], folded("pw3", "pw3_norm"), rtol=1e-5)
    np.testing.assert_allclose(s["g0"], folded("stem", "stem_norm") + folded("dw0", "dw0_norm"),
                               rtol=1e-5)
    # invariant to the kernel's scale, which the BatchNorm divides out (after re-estimating var)
    scaled = set_paths(v, {("params", "pw3", "kernel"): 3.0 * p["pw3"]["kernel"],
                           ("batch_stats", "pw3_norm", "var"): 9.0 * bs["pw3_norm"]["var"]})
    np.testing.assert_allclose(importance.l1(net.graph, scaled, fold_norm=True)["g4"], s["g4"],
                               rtol=1e-3)
    assert not np.allclose(importance.l1(net.graph, scaled)["g4"],
                           importance.l1(net.graph, v)["g4"])


def test_l1_fold_norm_without_batch_norm_is_raw():
    for norm in ("none", "instance"):
        net = subnets.zoo.create("ds-cnn-s", num_classes=4, input_shape=(16, 10, 1), norm=norm)
        v = net.init(jax.random.key(1))
        folded, raw = importance.l1(net.graph, v, fold_norm=True), importance.l1(net.graph, v)
        for g in raw:
            np.testing.assert_array_equal(folded[g], raw[g])


def test_l1_on_a_linen_model_with_its_own_leaf_names():
    # Kernels named "w", biases "b": roles, not leaf names, say which arrays are kernels, and
    # the BatchNorm folded is the one the graph records after each layer, with its epsilon.
    from _linen_mlp import linen_mlp

    net = linen_mlp()
    rng = np.random.default_rng(0)
    v = net.init(jax.random.key(0))
    v = set_paths(v, {("params", "bn_0", "scale"): rng.normal(size=24).astype(np.float32),
                      ("batch_stats", "bn_0", "var"): rng.uniform(0.1, 4, 24).astype(np.float32)})
    g0 = net.graph.layer(("params", "fc_0", "w")).out_group
    raw = np.abs(np.asarray(v["params"]["fc_0"]["w"], np.float64)).sum(axis=0)
    np.testing.assert_allclose(importance.l1(net, v)[g0], raw, rtol=1e-6)
    norm = net.graph.norm_of(("params", "fc_0", "w"))
    gain = np.abs(v["params"]["bn_0"]["scale"]) / np.sqrt(v["batch_stats"]["bn_0"]["var"]
                                                          + norm.epsilon)
    np.testing.assert_allclose(importance.l1(net, v, fold_norm=True)[g0], raw * gain, rtol=1e-5)
    with pytest.warns(DeprecationWarning, match="importance.l1"):
        old = importance.l1(v, net.graph)
    np.testing.assert_array_equal(old[g0], importance.l1(net.graph, v)[g0])
