"""trace / run / check: traced graphs equal the zoo's old declarations, and own models trace."""

import dataclasses
import inspect
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SMALL_SHAPES
from hypothesis import given, settings
from hypothesis import strategies as st

import subnets
from subnets.graph import ChannelGraph, Group, TraceError, check, run, trace
from subnets.graph.check import first_difference

SNAPSHOT = json.loads((Path(__file__).parent / "data" / "zoo_graphs.json").read_text())
CASES = sorted(SNAPSHOT["graphs"])
DEFAULT_NORM = {n: subnets.zoo.create(n, num_classes=3,
                                      input_shape=SMALL_SHAPES.get(n)).norm
                for n in subnets.zoo.NAMES}


def _conv_form(net):
    """The zoo's grouped-conv depthwise form (same variables, same function)."""
    if hasattr(net, "depthwise"):
        return dataclasses.replace(net, depthwise="conv")
    return net


def _zeros(net):
    shapes = jax.eval_shape(net.init, jax.random.key(0))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _summary(graph: ChannelGraph):
    groups = {g.name: (g.size, g.fixed, frozenset((m.path, m.axis, m.spatial) for m in g.members))
              for g in graph.groups}
    layers = {x.path: (x.kind, x.in_group, x.out_group, x.positions, x.window, x.in_positions)
              for x in graph.layers}
    return groups, layers


def _renames(traced: ChannelGraph, declared: ChannelGraph) -> dict:
    where = {(m.path, m.axis): g.name for g in declared.groups for m in g.members}
    return {g.name: where[(g.members[0].path, g.members[0].axis)] for g in traced.groups}


def test_every_zoo_model_and_norm_is_in_the_snapshot():
    want = {f"{n}/{k}" for n in subnets.zoo.NAMES for k in ("batch", "none")}
    assert want <= set(CASES)
    assert {c.split("/")[0] for c in CASES} == set(subnets.zoo.NAMES)


@pytest.mark.parametrize("case", CASES)
def test_traced_graph_equals_declared(case):
    name, norm = case.split("/")
    snap = SNAPSHOT["graphs"][case]
    declared = ChannelGraph.from_dict(snap["graph"])
    net = subnets.zoo.create(name, num_classes=SNAPSHOT["num_classes"],
                             input_shape=tuple(snap["input_shape"]), norm=norm)
    conv = _conv_form(net)
    v = _zeros(net)
    x = np.zeros((2, *net.input_shape), np.float32)
    first = trace(conv.apply, v, x, verify=False)
    # The zoo keeps its historic group names through names=; the run check on default norms.
    verify = norm == DEFAULT_NORM[name] or name in ("cnn-s", "ds-cnn-s")
    g = trace(conv.apply, v, x, names=_renames(first, declared), verify=verify)
    assert _summary(g) == _summary(declared)
    assert subnets.cost.macs(g) == snap["macs"]
    assert first_difference(declared, g) is None
    assert first_difference(net.graph, g) is None   # live, while the zoo declares its graphs
    g.validate(v)
    kinds = {n.num_groups is None for n in g.norms}
    assert len(g.norms) == 0 if norm == "none" else kinds == {norm == "batch"}
    for n in g.norms:
        size = g[n.group].size
        assert n.mixes_channels == (n.num_groups is not None and n.num_groups < size)
        if norm == "instance":
            assert n.num_groups == size
        if norm == "group":
            assert size % n.num_groups == 0 and n.num_groups <= 32
    if norm == "group" and name == "ds-cnn-s":  # 64 channels in 32 groups of two
        assert all(n.mixes_channels for n in g.norms)
    assert all(n.epsilon == pytest.approx(1e-5) for n in g.norms)


def test_layer_details_ds_cnn_m():
    net = subnets.zoo.create("ds-cnn-m", num_classes=7)
    g = trace(_conv_form(net).apply, _zeros(net), np.zeros((1, 49, 10, 1), np.float32),
              verify=False)
    stem = g.layer(("params", "stem", "kernel"))
    assert (stem.kernel_size, stem.stride, stem.padding) == ((10, 4), (2, 1), ((4, 5), (1, 2)))
    assert stem.out_spatial == (25, 10) and stem.in_spatial == (49, 10)
    assert stem.bias == ("params", "stem", "bias")
    assert stem.norm == ("params", "stem_norm") and stem.activation == "relu"
    dw = g.layer(("params", "dw0", "kernel"))
    assert dw.kind == "depthwise" and dw.stride == (2, 2) and dw.feature_groups == 172
    assert dw.in_group == dw.out_group
    assert g.norm_of(dw.path).var == ("batch_stats", "dw0_norm", "var")
    assert [m.role for m in g.members(dw.in_group, "depthwise")] == ["depthwise"] * 1
    assert g.producers(dw.in_group)[0].path == ("params", "stem", "kernel")
    assert {x.path[1] for x in g.consumers(dw.in_group)} == {"dw0", "pw0"}
    assert g.shape_of(("batch_stats", "dw0_norm", "mean")) == (172,)
    assert [op.kind for op in g.program[:4]] == ["layer", "norm", "act", "layer"]


def test_full_size_cpreresnet20_macs():
    spec = SNAPSHOT["full"]["cpreresnet20"]
    net = subnets.zoo.create("cpreresnet20", num_classes=spec["num_classes"],
                             input_shape=tuple(spec["input_shape"]))
    g = trace(net.apply, _zeros(net), np.zeros((1, 32, 32, 3), np.float32), verify=False)
    assert subnets.cost.macs(g) == spec["macs"]
    assert round(subnets.cost.macs(g) / 1e6, 1) == 33.7


@pytest.mark.parametrize("name", list(subnets.zoo.NAMES))
def test_run_on_sliced_variables_equals_zoo_apply(zoo_nets, name):
    net, v, x = zoo_nets[name]
    g = trace(_conv_form(net).apply, v, x, names=_renames(
        trace(_conv_form(net).apply, v, x, verify=False), net.graph), verify=False)
    rng = np.random.default_rng(len(name))
    widths = {grp.name: int(rng.integers(1, grp.size + 1)) for grp in g.free}
    sliced = subnets.slice_widths(v, g, widths)
    want = jax.jit(net.apply)(sliced, x)
    got = jax.jit(lambda vv, xx: run(g, vv, xx))(sliced, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1, float(abs(want).max())))


# ------------------------------------------------------------------ models outside the zoo
class ResMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(12, name="a")(x))
        h = nn.Dense(12, name="b")(h) + nn.Dense(12, name="skip")(x)
        return nn.Dense(3, name="head")(nn.tanh(h))


def _mlp():
    x = np.asarray(jax.random.normal(jax.random.key(1), (4, 5)))
    return ResMLP(), ResMLP().init(jax.random.key(0), x), x


def test_linen_mlp_with_residual_add():
    model, v, x = _mlp()
    g = trace(model.apply, v, x)
    assert [(grp.name, grp.size, grp.fixed) for grp in g.groups] == [
        ("in", 5, True), ("a", 12, False), ("b", 12, False), ("out", 3, True)]
    stream = {(m.path[1], m.role) for m in g["b"].members}
    assert stream == {("b", "out"), ("b", "bias"), ("skip", "out"), ("skip", "bias"),
                      ("head", "in")}
    assert {x_.path[1] for x_ in g.producers("b")} == {"b", "skip"}
    assert subnets.cost.macs(g) == 5 * 12 + 12 * 12 + 5 * 12 + 12 * 3
    assert "add" in [op.kind for op in g.program]
    np.testing.assert_allclose(run(g, v, x), model.apply(v, x), rtol=1e-5, atol=1e-6)


def _bn_dw_params(key, c_in=2, c=6, classes=4):
    ks = jax.random.split(key, 4)
    return {
        "params": {
            "conv": {"w": jax.random.normal(ks[0], (3, 3, c_in, c)) * 0.3},
            "bn": {"gamma": jnp.full((c,), 1.1), "beta": jnp.full((c,), 0.1)},
            "dw": {"w": jax.random.normal(ks[1], (3, 3, 1, c)) * 0.3, "b": jnp.zeros((c,))},
            "fc": {"w": jax.random.normal(ks[2], (c, classes)) * 0.3},
        },
        "stats": {"bn": {"mu": jnp.full((c,), 0.2), "sigma2": jnp.full((c,), 0.7)}},
    }


def bn_dw_apply(v, x):
    """A CNN written as a plain function over dicts: conv, BatchNorm, relu6, depthwise."""
    p, s = v["params"], v["stats"]
    h = jax.lax.conv_general_dilated(x, p["conv"]["w"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = (h - s["bn"]["mu"]) * (jax.lax.rsqrt(s["bn"]["sigma2"] + 1e-3) * p["bn"]["gamma"])
    h = jax.nn.relu6(h + p["bn"]["beta"])
    c = h.shape[-1]
    h = jax.lax.conv_general_dilated(h, p["dw"]["w"], (2, 2), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=c) + p["dw"]["b"]
    return jnp.mean(jax.nn.relu(h), axis=(1, 2)) @ p["fc"]["w"]


def _cnn():
    return _bn_dw_params(jax.random.key(0)), np.asarray(
        jax.random.normal(jax.random.key(1), (2, 8, 8, 2)))


def test_plain_function_cnn_with_batchnorm_and_depthwise():
    v, x = _cnn()
    g = trace(bn_dw_apply, v, x)
    assert [(grp.name, grp.size) for grp in g.groups] == [("in", 2), ("conv", 6), ("out", 4)]
    (norm,) = g.norms
    assert norm.id == ("params", "bn") and norm.group == "conv"
    assert (norm.scale, norm.shift) == (("params", "bn", "gamma"), ("params", "bn", "beta"))
    assert (norm.mean, norm.var) == (("stats", "bn", "mu"), ("stats", "bn", "sigma2"))
    assert norm.epsilon == pytest.approx(1e-3) and not norm.mixes_channels
    conv, dw, fc = g.layers
    assert (conv.norm, conv.activation) == (("params", "bn"), "relu6")
    assert dw.kind == "depthwise" and dw.bias == ("params", "dw", "b")
    assert dw.activation == "relu" and dw.positions == 16 and dw.in_positions == 64
    roles = {(m.path[-1], m.role) for m in g["conv"].members}
    assert roles == {("w", "out"), ("gamma", "scale"), ("beta", "shift"), ("mu", "mean"),
                     ("sigma2", "var"), ("w", "depthwise"), ("b", "bias"), ("w", "in")}
    assert subnets.cost.macs(g) == 64 * 9 * 2 * 6 + 16 * 9 * 6 + 6 * 4
    half = subnets.slice_widths(v, g, {"conv": 3})
    np.testing.assert_allclose(run(g, half, x), bn_dw_apply(half, x), rtol=1e-5, atol=1e-6)


_RUN = {}


def _jit_run(g):
    if id(g) not in _RUN:
        _RUN[id(g)] = (g, jax.jit(lambda v, x: run(g, v, x)))
    return _RUN[id(g)][1]


_GRAPHS = {}


def _traced(which):
    if which not in _GRAPHS:
        if which == "mlp":
            model, v, x = _mlp()
            _GRAPHS[which] = (trace(model.apply, v, x), v, x)
        else:
            v, x = _cnn()
            _GRAPHS[which] = (trace(bn_dw_apply, v, x), v, x)
    return _GRAPHS[which]


@pytest.mark.parametrize("which", ["mlp", "cnn"])
@settings(max_examples=5)
@given(seed=st.integers(0, 2**31 - 1))
def test_run_is_permutation_invariant(which, seed):
    g, v, x = _traced(which)
    rng = np.random.default_rng(seed)
    perms = {grp.name: rng.permutation(grp.size) for grp in g.free}
    permuted = g.take(v, perms)
    f = _jit_run(g)
    np.testing.assert_allclose(f(permuted, x), f(v, x), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(subnets.graph.get_path(permuted, g.free[0].members[0].path)),
                           np.asarray(subnets.graph.get_path(v, g.free[0].members[0].path)))


def test_batchnorm_momentum_from_train_apply():
    class BNNet(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            h = nn.Dense(8, name="d")(x)
            h = nn.BatchNorm(use_running_average=not train, momentum=0.8, name="bn")(h)
            return nn.Dense(2, name="o")(nn.relu(h))

    x = np.asarray(jax.random.normal(jax.random.key(0), (6, 3)))
    v = BNNet().init(jax.random.key(1), x)

    def train_apply(v, x):
        y, upd = BNNet().apply(v, x, train=True, mutable=["batch_stats"])
        return y, upd["batch_stats"]

    g = trace(BNNet().apply, v, x, train_apply_fn=train_apply)
    assert g.norms[0].momentum == pytest.approx(0.8)
    assert trace(BNNet().apply, v, x, verify=False).norms[0].momentum is None
    logits, stats = run(g, v, x, train=True)
    want, want_stats = train_apply(v, x)
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["bn"]["var"], want_stats["bn"]["var"], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ errors
def test_unsupported_primitive_names_it_and_its_source_line():
    v = {"w": np.ones((8, 2), np.float32)}

    def apply(v, x):
        return jnp.concatenate([x, x], axis=-1) @ v["w"]

    line = inspect.getsourcelines(apply)[1] + 1
    with pytest.raises(TraceError, match=rf"'concatenate' at .*test_graph_trace.py:{line}.*"
                                         r"declare the graph by hand"):
        trace(apply, v, np.zeros((1, 4), np.float32))


def test_channel_splitting_reshape_outside_a_norm_is_refused():
    v = {"a": np.ones((3, 8), np.float32), "b": np.ones((4, 2), np.float32)}

    def apply(v, x):
        h = (x @ v["a"]).reshape(x.shape[0], 2, 4)
        return h.sum(1) @ v["b"]

    with pytest.raises(TraceError, match=r"'reshape'.*splits channel axis"):
        trace(apply, v, np.zeros((1, 3), np.float32))


def test_check_names_the_first_difference():
    model, v, x = _mlp()
    g = trace(model.apply, v, x)
    check(g, model.apply, v, x)
    b = g["b"]
    dropped = tuple(m for m in b.members if m.path[1] != "head")
    bad = ChannelGraph(tuple(Group(b.name, b.size, dropped) if grp.name == "b" else grp
                             for grp in g.groups), g.layers)
    with pytest.raises(ValueError, match=r"declared group 'b' lacks member params/head/kernel "
                                         r"axis 0 \(role 'in'"):
        check(bad, model.apply, v, x)
    wrong = ChannelGraph(g.groups, tuple(dataclasses.replace(x_, window=2)
                                         if x_.path[1] == "a" else x_ for x_ in g.layers))
    with pytest.raises(ValueError, match=r"layer params/a/kernel: declared window 2"):
        check(wrong, model.apply, v, x)


def test_to_dict_round_trip_and_json():
    g, _, _ = _traced("cnn")
    d = json.loads(json.dumps(g.to_dict()))
    back = ChannelGraph.from_dict(d)
    assert back == g
    assert back.program == g.program and back.norms == g.norms and back.shapes == g.shapes


@pytest.mark.parametrize("forge, match", [
    (lambda d: d["groups"][0].update(size=10**30), r"groups\[0\]\.size"),
    (lambda d: d["groups"][1]["members"][0].update(role="weight"), r"role 'weight'"),
    (lambda d: d["groups"][1].update(members="x" * 10), r"groups\[1\]\.members"),
    (lambda d: d["layers"][0].update(in_group="nope"), r"unknown group 'nope'"),
    (lambda d: d["program"][0].update(inputs=[0] * (10**6 + 1)), r"program\[0\]\.inputs"),
    (lambda d: d.update(version=99), r"version 99"),
    (lambda d: d["norms"][0].update(epsilon="1e-5"), r"norms\[0\]\.epsilon"),
    (lambda d: d["shapes"].append([["a"], [-1]]), r"shapes"),
])
def test_from_dict_rejects_forged_dicts(forge, match):
    g, _, _ = _traced("cnn")
    d = json.loads(json.dumps(g.to_dict()))
    forge(d)
    with pytest.raises(ValueError, match=match):
        ChannelGraph.from_dict(d)


def test_names_and_fixed():
    model, v, x = _mlp()
    g = trace(model.apply, v, x, names={"a": "hidden"}, fixed=("b",), verify=False)
    assert [(grp.name, grp.fixed) for grp in g.groups] == [
        ("in", True), ("hidden", False), ("b", True), ("out", True)]
    assert g.layer(("params", "a", "kernel")).out_group == "hidden"
    with pytest.raises(ValueError, match=r"renames unknown groups \['zz'\]"):
        trace(model.apply, v, x, names={"zz": "q"}, verify=False)
    with pytest.raises(ValueError, match=r"fixed= names unknown groups \['zz'\]"):
        trace(model.apply, v, x, fixed=("zz",), verify=False)
