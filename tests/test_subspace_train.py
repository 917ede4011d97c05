"""Tests for subnets.subspace training: one compilation, sampling, warm-up, BN merging, resume,
data parallelism, learning, and baselines."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from subnets.zoo.common import Net, norm_layer

import subnets
from subnets import subspace
from subnets.graph import ChannelGraph, Group, Member
from subnets.subspace import baselines
from subnets.train import cross_entropy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dnn():
    return subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))


def toy_data(n=64, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)


def test_one_compilation_for_all_levels():
    net = dnn()
    x, y = toy_data()
    tx = subspace.default_optimizer(20, lr=0.05)
    state = subspace.init_state(subspace.init_point(net, key=jax.random.key(0)), tx)
    step = subspace.make_train_step(net, tx, subspace.LCSConfig(step="masked"), total_steps=20)
    seen = []
    for i in range(6):
        state, m = step(state, x[:32], y[:32], jax.random.key(i))
        seen.append(np.asarray(m["alphas"]))
    assert step.traces == 1
    seen = np.stack(seen)
    assert np.all(seen[:, 0] == 0.0) and np.all(seen[:, 1] == 1.0)  # the sandwich's ends
    assert len(np.unique(seen[:, 2:])) == 12  # fresh uniform draws every step
    assert int(state.step) == 6


def test_discrete_and_quantized_sampling():
    sub = subspace.point({}, compression="quantized")
    for i in range(5):
        a = subspace.sample_alphas(jax.random.key(i), subspace.LCSConfig(3, "uniform"), sub)
        assert set(np.round(np.asarray(a) * 6).tolist()) <= set(range(1, 7))
    cfg = baselines.discrete_config()
    np.testing.assert_allclose(subspace.sample_alphas(jax.random.key(0), cfg, sub),
                               [0, 1 / 3, 2 / 3, 1], rtol=1e-6)
    with pytest.raises(ValueError, match="sandwich rule needs"):
        subspace.LCSConfig(1, "sandwich")


def test_unstructured_warmup_schedules():
    net = dnn()
    x, y = toy_data(16)
    v = net.init(jax.random.key(0))
    cfg = subspace.LCSConfig(1, "uniform", warmup=0.5)
    loss = subspace.make_loss(net, cfg, total_steps=100)
    apply = lambda w: float(cross_entropy(net.apply(w, x), y))
    alphas = jnp.zeros((1,))  # density 0.025

    p = subspace.point(v, compression="unstructured")
    tr = subspace.trainable(p)
    dense, sparse = apply(v), apply(subnets.topk_mask(v, 0.025, graph=net.graph))
    np.testing.assert_allclose(loss(tr, p, alphas, x, y, jnp.int32(10))[0], dense, rtol=1e-5)
    np.testing.assert_allclose(loss(tr, p, alphas, x, y, jnp.int32(60))[0], sparse, rtol=1e-5)

    ln = subspace.line(v, net.init(jax.random.key(1)), compression="unstructured")
    tr = subspace.trainable(ln)
    w0 = subspace.weights(ln, 0.0)
    reg = float(subspace.regulariser(ln))
    half = apply(subnets.topk_mask(w0, 0.025 + 0.975 * 0.5, graph=net.graph)) + reg
    np.testing.assert_allclose(loss(tr, ln, alphas, x, y, jnp.int32(25))[0], half, rtol=1e-5)


def test_merge_batch_stats():
    old = {"bn": {"mean": jnp.array([9.0, 9.0, 9.0])}}
    stats = {"bn": {"mean": jnp.array([[1.0, 2.0, 0.0], [3.0, 4.0, 5.0]])}}
    active = {"bn": {"mean": jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])}}
    out = subspace.merge_batch_stats(old, stats, active)
    np.testing.assert_allclose(out["bn"]["mean"], [2.0, 2.0, 9.0])


class _DenseBN(nn.Module):
    widths: tuple

    @nn.compact
    def __call__(self, x, train=False):
        h = nn.Dense(dict(self.widths)["h"], name="d")(x)
        return norm_layer("batch", "bn", dict(self.widths)["h"], train)(h)


def test_recalibrate_gives_the_batch_statistics():
    graph = ChannelGraph((
        Group("in", 3, (Member(("params", "d", "kernel"), 0),), fixed=True),
        Group("h", 4, (Member(("params", "d", "kernel"), 1), Member(("params", "d", "bias"), 0),
                       Member(("params", "bn", "scale"), 0), Member(("params", "bn", "bias"), 0),
                       Member(("batch_stats", "bn", "mean"), 0),
                       Member(("batch_stats", "bn", "var"), 0))),))
    net = Net("tiny", graph, (3,), 4, "batch", lambda w, **_: _DenseBN(tuple(sorted(w.items()))))
    v = net.init(jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    out = baselines.recalibrate(net, v, x, batch_size=32)
    h = np.concatenate([x[:32], x[32:]]) @ v["params"]["d"]["kernel"] + v["params"]["d"]["bias"]
    np.testing.assert_allclose(out["batch_stats"]["bn"]["mean"], h.mean(0), rtol=1e-4,
                               atol=1e-5)
    var = (h[:32].var(0) + h[32:].var(0)) / 2
    np.testing.assert_allclose(out["batch_stats"]["bn"]["var"], var, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="batch_stats"):
        baselines.recalibrate(dnn(), {"params": {}}, x)


def test_fit_resume_matches_uninterrupted(tmp_path):
    net = dnn()
    x, y = toy_data(64)
    s0 = subspace.init_line(net, key=jax.random.key(0), compression="unstructured")
    kw = dict(epochs=2, batch_size=32, key=jax.random.key(3), lr=0.05, progress=False)
    full = subspace.fit(net, s0, x, y, checkpoint_dir=tmp_path / "a", **kw)

    class Stop(Exception):
        pass

    def stop(epoch, _):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        subspace.fit(net, s0, x, y, checkpoint_dir=tmp_path / "b", on_epoch=stop, **kw)
    resumed = subspace.fit(net, s0, x, y, checkpoint_dir=tmp_path / "b", **kw)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 full, resumed)
    assert not np.allclose(full.end["params"]["dense1"]["kernel"],
                           s0.end["params"]["dense1"]["kernel"])
    subspace.save(tmp_path / "s", full, meta={"model": "dnn-s"})
    back, meta = subspace.load(tmp_path / "s")
    assert meta["kind"] == "line" and back.compression == "unstructured"
    jax.tree.map(np.testing.assert_array_equal, back.end, full.end)


DP_SCRIPT = textwrap.dedent("""
    import os, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax, numpy as np, subnets
    from subnets import subspace
    assert len(jax.devices()) == 2, jax.devices()
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    s = subspace.init_line(net, key=jax.random.key(0), compression="unstructured")
    tx = subspace.default_optimizer(10, lr=0.05)
    out = {}
    for name, mesh in (("single", None), ("dp", subspace.data_mesh())):
        state = subspace.init_state(s, tx, mesh=mesh)
        step = subspace.make_train_step(net, tx, subspace.LCSConfig(2, "sandwich"),
                                        total_steps=10, mesh=mesh)
        losses = []
        for i in range(3):
            state, m = step(state, x, y, jax.random.key(7))
            losses.append(float(m["loss"]))
        out[name] = losses
        out[name + "_shards"] = len(state.subspace.base["params"]["dense0"]["kernel"]
                                    .sharding.device_set)
    print(json.dumps(out))
""")


def test_data_parallel_step_matches_single_device():
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    res = subprocess.run([sys.executable, "-c", DP_SCRIPT], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["dp_shards"] == 2  # replicated over both devices
    np.testing.assert_allclose(out["dp"], out["single"], rtol=1e-5)
    assert out["single"][2] != out["single"][0]  # the steps did train


@pytest.mark.slow
def test_learns_and_evaluates_at_unseen_levels():
    net = subnets.zoo.create("dnn-s", num_classes=10, input_shape=(8, 8, 1))
    x, y = subnets.data.load("digits", "train")
    xt, yt = subnets.data.load("digits", "test")
    acc = lambda v: subnets.train.evaluate(net, v, xt, yt)
    kw = dict(epochs=6, batch_size=64, key=jax.random.key(1), lr=0.05, progress=False)
    s = subspace.fit(net, subspace.init_point(net, key=jax.random.key(0)), x, y, **kw)
    for w in (0.25, 0.4, 1.0):
        assert acc(subspace.at_level(s, net, width=w)) > 0.7, w
    u = subspace.fit(net, subspace.init_point(net, key=jax.random.key(0),
                                              compression="unstructured", low=0.1),
                     x, y, config=subspace.LCSConfig(1, "uniform", warmup=0.3), **kw)
    for d in (0.137, 0.61):  # continuous draws never hit these exactly
        assert acc(subspace.at_level(u, net, density=d)) > 0.7, d
    q = subspace.fit(net, subspace.init_point(net, key=jax.random.key(0),
                                              compression="quantized", low=3, high=6),
                     x, y, config=subspace.LCSConfig(1, "uniform", warmup=0.5), **kw)
    for b in (4, 8, 10):  # 8 and 10 bits lie outside the trained 3..6: allowed explicitly
        assert acc(subspace.at_level(q, net, bits=b, out_of_range="allow")) > 0.7, b
    with pytest.raises(ValueError, match="bits 8 is outside the trained range"):
        subspace.at_level(q, net, bits=8)
    assert sorted(q.base[subspace.ACT_RANGES]) == ["dense1", "dense2"]  # running ranges kept


def test_running_activation_ranges_follow_the_batches():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,), norm="none")
    x, y = toy_data(32)
    s = subspace.init_point(net, key=jax.random.key(0), compression="quantized")
    s = subspace.init_act_ranges(net, s, x)
    # Start from a range far too wide: the EMA pulls it towards the batches' ranges.
    s = dataclasses.replace(s, base={**s.base, subspace.ACT_RANGES: {
        k: np.array([-50.0, 50.0], np.float32) for k in s.base[subspace.ACT_RANGES]}})
    tx = subspace.default_optimizer(10, lr=0.01)
    cfg = subspace.LCSConfig(1, "uniform", warmup=0.0, range_momentum=0.5)
    step = subspace.make_train_step(net, tx, cfg, total_steps=10)
    st = subspace.init_state(s, tx)
    for i in range(6):
        st, _ = step(st, x, y, jax.random.key(i))
    assert step.traces == 1
    for lo, hi in st.subspace.base[subspace.ACT_RANGES].values():
        assert -50.0 * 0.5 ** 6 - 10 < float(lo) <= float(hi) < 50.0 * 0.5 ** 6 + 10


def test_activation_masks_train_exactly_like_weight_masks():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,), norm="batch")
    x, y = toy_data(32)
    s = subspace.init_point(net, key=jax.random.key(0))
    tx = subspace.default_optimizer(10, lr=0.05)
    states = {}
    for mask in ("activations", "weights"):
        step = subspace.make_train_step(net, tx, subspace.LCSConfig(4, "sandwich", mask=mask,
                                                                    step="masked"),
                                        total_steps=10)
        st = subspace.init_state(s, tx)
        for i in range(2):
            st, m = step(st, x, y, jax.random.key(i))
        states[mask] = (st, m)
    (a, ma), (b, mb) = states["activations"], states["weights"]
    np.testing.assert_allclose(ma["losses"], mb["losses"], rtol=1e-5)
    jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-6),
                 a.subspace.base, b.subspace.base)
    # The running statistics were updated (merged over the levels each channel was live in).
    assert np.any(np.asarray(a.subspace.base["batch_stats"]["norm0"]["mean"]) != 0)


@pytest.mark.parametrize("compression", ["structured", "quantized"])
def test_levels_unroll_trains_exactly_like_vmap(compression):
    # unrolled, the program runs the same levels one after another: same losses and updates
    norm = "batch" if compression == "structured" else "none"
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,), norm=norm)
    x, y = toy_data(32)
    s = subspace.init_point(net, key=jax.random.key(0), compression=compression)
    tx = subspace.default_optimizer(10, lr=0.05)
    runs = {}
    for levels in ("vmap", "unroll"):
        cfg = subspace.LCSConfig(4, "sandwich" if compression == "structured" else "uniform",
                                 levels=levels, warmup=0.0, step="masked")
        step = subspace.make_train_step(net, tx, cfg, total_steps=10)
        st = subspace.init_state(s, tx)
        for i in range(3):
            st, m = step(st, x, y, jax.random.key(i))
        assert step.traces == 1
        runs[levels] = (st, m)
    (a, ma), (b, mb) = runs["vmap"], runs["unroll"]
    np.testing.assert_allclose(ma["alphas"], mb["alphas"])
    np.testing.assert_allclose(ma["losses"], mb["losses"], rtol=1e-5)
    jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-6),
                 a.subspace.base, b.subspace.base)
    with pytest.raises(ValueError, match="levels"):
        subspace.LCSConfig(levels="map")


def test_recalibrate_reads_each_norms_momentum_or_measures_it():
    from subnets.models import from_linen

    class Slow(nn.Module):  # momentum 0.5, not the zoo's 0.9
        @nn.compact
        def __call__(self, x, train=False):
            h = nn.Dense(4, name="d")(x)
            return nn.BatchNorm(use_running_average=not train, momentum=0.5, name="bn")(h)

    x = np.random.default_rng(1).normal(size=(32, 3)).astype(np.float32)
    model = from_linen(Slow(), x[:4])
    assert set(baselines.momenta(model.graph).values()) == {0.5}
    v = model.init(jax.random.key(0))
    h = x @ np.asarray(v["params"]["d"]["kernel"]) + np.asarray(v["params"]["d"]["bias"])
    out = baselines.recalibrate(model, v, x, batch_size=32)
    np.testing.assert_allclose(out["batch_stats"]["bn"]["mean"], h.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["batch_stats"]["bn"]["var"], h.var(0), rtol=1e-4, atol=1e-5)
    # a graph without the momentum: measured from the model, same statistics
    norms = tuple(dataclasses.replace(n, momentum=None) for n in model.graph.norms)
    blind = dataclasses.replace(model.graph, norms=norms)
    assert baselines.momenta(blind) == {}

    class Blind:
        graph, input_shape, init = blind, model.input_shape, model.init
        apply = staticmethod(model.apply)

    again = baselines.recalibrate(Blind(), v, x, batch_size=32)
    np.testing.assert_allclose(again["batch_stats"]["bn"]["var"], h.var(0), rtol=1e-4,
                               atol=1e-5)
