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
    sliced = subnets.slice_widths(v, net.graph, widths)
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
