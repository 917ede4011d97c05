import jax
import numpy as np
import pytest

import subnets
from subnets import cost


def test_dnn_s_macs_by_hand():
    net = subnets.zoo.create("dnn-s", num_classes=12)
    assert cost.macs(net) == 250 * 144 + 144 * 144 + 144 * 144 + 144 * 12
    w = {"h0": 50, "h1": 20, "h2": 100}
    assert cost.macs(net, w) == 250 * 50 + 50 * 20 + 20 * 100 + 100 * 12


def _dscnn_s_by_hand(c):
    """DS-CNN-S on 49x10x1: stem 10x4 stride 2 SAME -> 25x5; 4 x (dw 3x3 + pw 1x1); dense."""
    pos = 25 * 5
    m = pos * 10 * 4 * 1 * c[0]
    for i in range(4):
        m += pos * 9 * c[i]  # depthwise follows its input group
        m += pos * c[i] * c[i + 1]
    return m + c[4] * 12


@pytest.mark.parametrize("c", [(64,) * 5, (10, 20, 30, 40, 50), (1, 64, 2, 64, 3)])
def test_ds_cnn_s_macs_by_hand(c):
    net = subnets.zoo.create("ds-cnn-s", num_classes=12)
    widths = {f"g{i}": c[i] for i in range(5)}
    assert cost.macs(net, widths) == _dscnn_s_by_hand(c)


@pytest.mark.parametrize("name", ["dnn-s", "cnn-s", "ds-cnn-s", "cpreresnet20", "vgg16"])
def test_params_and_bytes_match_sliced_arrays(name):
    net = subnets.zoo.create(name, num_classes=10)
    rng = np.random.default_rng(0)
    widths = {g.name: int(rng.integers(1, g.size + 1)) for g in net.graph.free}
    v = jax.eval_shape(net.init, jax.random.key(0))
    v = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), v)
    sliced = subnets.slice_widths(net.graph, v, widths)
    n = sum(a.size for a in jax.tree.leaves(sliced["params"]))
    assert cost.params(net, widths) == n
    assert cost.bytes(net, widths) == 4 * n
    assert cost.bytes(net, widths, dtype=np.int8) == n


def test_reference_model_sizes():
    """Published sizes: VGG-16 14.7M params (DNNShifter), cPreResNet20 33.7 MMACs (LCS)."""
    assert round(cost.params(subnets.zoo.create("vgg16", num_classes=10)) / 1e6, 1) == 14.7
    assert round(cost.macs(subnets.zoo.create("cpreresnet20", num_classes=10)) / 1e6, 1) == 33.7


def test_activation_memory_shrinks_with_width():
    net = subnets.zoo.create("ds-cnn-s", num_classes=12)
    full = cost.activation_memory(net)
    assert full == 4 * (25 * 5 * 64 * 2)
    assert cost.activation_memory(net, {f"g{i}": 32 for i in range(5)}) == full // 2


def test_summary_reports_groups():
    net = subnets.zoo.create("ds-cnn-s", num_classes=12)
    s = cost.summary(net)
    assert [g["name"] for g in s["groups"] if not g["fixed"]] == [f"g{i}" for i in range(5)]
    assert s["macs"] == cost.macs(net) and s["params"] == cost.params(net)


class _NoInit:
    """A model whose init must not be called: costs read the graph's recorded shapes."""

    def __init__(self, net):
        self.graph, self.input_shape = net.graph, net.input_shape

    def init(self, key):
        raise AssertionError("cost called init")


@pytest.mark.parametrize("name", ["cnn-s", "cpreresnet20"])
def test_params_read_graph_shapes_without_init(name):
    net = subnets.zoo.create(name, num_classes=10)
    widths = {g.name: max(1, g.size // 3) for g in net.graph.free}
    v = jax.tree.map(lambda s: np.zeros(s.shape, np.float32),
                     jax.eval_shape(net.init, jax.random.key(0)))
    n_full = sum(a.size for a in jax.tree.leaves(v["params"]))
    for target in (_NoInit(net), net.graph):
        assert cost.params(target) == n_full
        assert cost.params(target, widths) == cost.params(net, widths) < n_full
        assert cost.bytes(target, widths, np.int8) == cost.params(net, widths)
        every = cost.array_shapes(target, collection=None)
        assert {p for p in every if p[0] == "batch_stats"} == {
            p for p, _ in subnets.graph.leaf_paths(v) if p[0] == "batch_stats"}
    assert cost.summary(net.graph)["params"] == n_full


def test_costs_need_recorded_shapes():
    from subnets.graph import ChannelGraph, Group, Member

    g = ChannelGraph((Group("h", 3, (Member(("params", "k"), 1),)),))
    with pytest.raises(ValueError, match="records no array shapes"):
        cost.params(g)
    with pytest.raises(TypeError, match="ChannelGraph"):
        cost.params(object())


@pytest.mark.parametrize("norm", ["batch", "group", "instance", "none"])
def test_summary_norm_kind_read_from_the_graph(norm):
    net = subnets.zoo.create("ds-cnn-s", num_classes=4, input_shape=(16, 8, 1), norm=norm)
    assert cost.summary(net)["norm"] == norm
