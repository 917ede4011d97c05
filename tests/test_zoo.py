import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import subnets
from subnets import zoo

NAMES = list(zoo.NAMES)
_JIT: dict = {}


def _jitted(net, kind):
    """One compiled function per (model, kind), reused across hypothesis examples."""
    key = (net.name, kind)
    if key not in _JIT:
        if kind == "apply":
            fn = jax.jit(net.apply)
        elif kind == "permuted":
            fn = jax.jit(lambda v, p, x: net.apply(subnets.permute(net.graph, v, p), x))
        else:
            fn = jax.jit(lambda v, w, x: net.apply(subnets.width_mask(net.graph, v, w), x))
        _JIT[key] = fn
    return _JIT[key]


def _close(a, b, rtol=1e-4):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(1.0, float(np.abs(a).max()))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("name", NAMES)
def test_init_apply_and_graph_validate(zoo_nets, name):
    net, v, x = zoo_nets[name]
    net.graph.validate(v)
    logits = _jitted(net, "apply")(v, x)
    assert logits.shape == (3, 7)
    assert np.all(np.isfinite(np.asarray(logits)))
    assert net.graph.widths_of(v) == net.graph.sizes


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=3)
@given(seed=st.integers(0, 2**31 - 1))
def test_permutation_keeps_function(zoo_nets, name, seed):
    net, v, x = zoo_nets[name]
    keys = jax.random.split(jax.random.key(seed), len(net.graph.free))
    perms = {g.name: jax.random.permutation(k, g.size)
             for g, k in zip(net.graph.free, keys, strict=True)}
    _close(_jitted(net, "permuted")(v, perms, x), _jitted(net, "apply")(v, x), rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=2)
@given(data=st.data())
def test_slice_equals_mask(zoo_nets, name, data):
    net, v, x = zoo_nets[name]
    widths = {g.name: data.draw(st.integers(1, g.size), label=g.name) for g in net.graph.free}
    sliced = subnets.slice_widths(net.graph, v, widths)
    net.graph.validate(sliced, widths=widths)
    _close(_jitted(net, "apply")(sliced, x), _jitted(net, "masked")(v, widths, x))


def test_width_mask_vmaps_over_widths(zoo_nets):
    net, v, x = zoo_nets["ds-cnn-s"]
    ws = {g.name: jnp.array([g.size, g.size // 2, 3]) for g in net.graph.free}
    out = jax.jit(jax.vmap(lambda w: net.apply(subnets.width_mask(net.graph, v, w), x)))(ws)
    for i in range(3):
        w = {k: int(a[i]) for k, a in ws.items()}
        _close(out[i], net.apply(subnets.slice_widths(net.graph, v, w), x))


def test_depthwise_impls_agree(zoo_nets):
    net, v, x = zoo_nets["ds-cnn-m"]  # has a stride-2 depthwise
    conv = dataclasses.replace(net, depthwise="conv")
    _close(net.apply(v, x), conv.apply(v, x), rtol=1e-5)


@pytest.mark.parametrize("norm", ["batch", "group", "instance", "none"])
def test_norm_choices(norm):
    net = zoo.create("ds-cnn-s", num_classes=4, input_shape=(16, 8, 1), norm=norm)
    v = net.init(jax.random.key(0))
    assert ("batch_stats" in v) == (norm == "batch")
    net.graph.validate(v)
    out = net.apply(v, jnp.ones((2, 16, 8, 1)), train=True, mutable=True)
    assert out[0].shape == (2, 4)


def test_train_mode_updates_batch_stats():
    net = zoo.create("cnn-s", num_classes=3)
    v = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4,) + net.input_shape)
    _, stats = net.apply(v, x, train=True, mutable=True)
    before = v["batch_stats"]["norm0"]["mean"]
    assert not np.allclose(stats["norm0"]["mean"], before)


def test_create_errors():
    with pytest.raises(ValueError, match="unknown model 'resnet9'"):
        zoo.create("resnet9", num_classes=10)
    with pytest.raises(ValueError, match="norm must be one of"):
        zoo.create("vgg16", num_classes=10, norm="layer")
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        zoo.create("vgg16", num_classes=10, input_shape=(784,))


def test_residual_stream_is_one_group():
    net = zoo.create("cpreresnet20", num_classes=10)
    s1 = net.graph["s1"]
    paths = {m.path for m in s1.members}
    # projection output, both blocks' last convs, next block's norm and first conv input ...
    assert ("params", "s1b0_down", "kernel") in paths
    assert ("params", "s1b1_conv3", "kernel") in paths
    assert ("params", "s1b1_norm1", "scale") in paths
    assert ("params", "s2b0_down", "kernel") in paths  # ... up to the next stage's projection
    assert len(net.graph.free) == 16


def test_graphs_are_traced_lazily_and_cached():
    from subnets.models.zoo.common import LazyGraph

    net = zoo.create("dnn-m", num_classes=5, input_shape=(6,))
    assert isinstance(object.__getattribute__(net, "graph"), LazyGraph)  # nothing traced yet
    graph = net.graph
    assert graph.program and graph.shapes  # a traced graph: program and every array's shape
    again = zoo.create("dnn-m", num_classes=5, input_shape=(6,))
    assert again.graph is graph  # one trace per (model, classes, shape, norm)
    assert zoo.create("dnn-m", num_classes=4, input_shape=(6,)).graph is not graph


def test_ds_cnn_is_traced_in_its_grouped_conv_form():
    net = zoo.create("ds-cnn-s", num_classes=12)
    dw = [lay for lay in net.graph.layers if lay.kind == "depthwise"]
    assert [lay.path[1] for lay in dw] == ["dw0", "dw1", "dw2", "dw3"]
    assert all(lay.in_group == lay.out_group for lay in dw)
    norms = {n.id[1]: n for n in net.graph.norms}
    assert norms["stem_norm"].group == "g0" and norms["stem_norm"].momentum == pytest.approx(0.9)


def test_default_class_counts_come_from_the_registry():
    assert zoo.create("ds-cnn-s").graph["out"].size == 12
    assert zoo.create("vgg16", input_shape=(8, 8, 3)).graph["out"].size == 10


def test_v1_metadata_rebuilds_the_zoo_model():
    net = zoo.from_meta({"model": "cnn-s", "num_classes": 3, "input_shape": [49, 10, 1],
                         "norm": "batch"})
    assert net.name == "cnn-s" and net.graph["out"].size == 3


def test_group_norm_models_are_traced_too():
    net = zoo.create("vgg16", num_classes=5, input_shape=(8, 8, 3), norm="group")
    graph = net.graph
    assert graph.program and len(graph.norms) == 13  # traced, not declared: it has a program
    assert all(n.mixes_channels and n.mean is None for n in graph.norms)
    assert graph.norm_of(("params", "conv0", "kernel")).id == ("params", "norm0")
