import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from subnets.zoo.kws import CNNConfig, DNNConfig, DSCNNConfig, make_cnn, make_dnn, make_dscnn

import subnets
from subnets import cost
from subnets.nested.select import chain_order, select_widths


def _value(scores, widths):
    return sum(np.sort(scores[g])[::-1][:w].sum() for g, w in widths.items())


def _brute(net, scores, budget, resource, min_units, min_fraction=0.0):
    free = net.graph.free
    best = -1.0
    lows = [min(max(min_units, int(np.ceil(min_fraction * g.size - 1e-9))), g.size) for g in free]
    for ws in itertools.product(*[range(lo, g.size + 1) for lo, g in zip(lows, free, strict=True)]):
        w = dict(zip([g.name for g in free], ws, strict=True))
        c = cost.macs(net, w) if resource == "macs" else cost.params(net, w)
        if c <= budget * (1 + 1e-9):
            best = max(best, _value(scores, w))
    return best


@st.composite
def small_nets(draw):
    # Widths from 2: a 1-channel axis cannot be told from broadcasting, so the tracer refuses
    # it (TraceError); a level may still narrow any group to 1 unit.
    kind = draw(st.sampled_from(["dnn", "cnn", "dscnn"]))
    if kind == "dnn":
        hidden = tuple(draw(st.lists(st.integers(2, 5), min_size=1, max_size=3)))
        return make_dnn("dnn-t", DNNConfig(hidden), 3, (4,), "none")
    if kind == "cnn":
        f = (draw(st.integers(2, 4)), draw(st.integers(2, 4)))
        return make_cnn("cnn-t", CNNConfig(f, draw(st.integers(2, 4)), dense=3,
                                           kernel=(3, 3)), 2, (8, 6, 1), "batch")
    return make_dscnn("dscnn-t", DSCNNConfig(draw(st.integers(2, 4)), draw(st.integers(1, 2)),
                                             stem_kernel=(3, 3)), 2, (6, 6, 1), "batch")


@settings(max_examples=25)
@given(net=small_nets(), frac=st.floats(0.05, 1.0), seed=st.integers(0, 10**6),
       resource=st.sampled_from(["macs", "params"]), min_units=st.integers(1, 2),
       min_fraction=st.sampled_from([0.0, 0.3, 0.5]))
def test_dp_objective_equals_brute_force(net, frac, seed, resource, min_units, min_fraction):
    rng = np.random.default_rng(seed)
    scores = {g.name: rng.random(g.size) for g in net.graph.free}
    total = cost.macs(net) if resource == "macs" else cost.params(net)
    best = _brute(net, scores, frac * total, resource, min_units, min_fraction)
    kw = dict(resource=resource, min_units=min_units, min_fraction=min_fraction)
    if best < 0:
        with pytest.raises(ValueError, match="infeasible"):
            select_widths(net, scores, [frac], **kw)
        return
    (w,) = select_widths(net, scores, [frac], **kw)
    got = cost.macs(net, w) if resource == "macs" else cost.params(net, w)
    assert got <= frac * total * (1 + 1e-9)
    assert _value(scores, w) == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize("name", ["dnn-s", "cnn-s", "ds-cnn-s", "ds-cnn-l"])
@pytest.mark.parametrize("order", ["bottom_up", "top_down"])
def test_levels_within_budget_and_nested(name, order):
    net = subnets.zoo.create(name, num_classes=12)
    rng = np.random.default_rng(1)
    scores = {g.name: rng.random(g.size) for g in net.graph.free}
    budgets = [0.25, 0.5, 0.75]
    levels = select_widths(net, scores, budgets, order=order)
    full = cost.macs(net)
    for w, b in zip(levels, budgets, strict=True):
        assert cost.macs(net, w) <= b * full
        assert min(w.values()) >= 2
    for a, b in zip(levels, levels[1:], strict=False):
        assert all(a[g] <= b[g] for g in a)


def test_min_fraction_rules_out_bottlenecks():
    # flat scores: the additive objective is indifferent to which layer loses units, and the
    # cheapest way to meet a small budget is a one-layer bottleneck
    net = subnets.zoo.create("ds-cnn-s", num_classes=12)
    scores = {g.name: np.ones(g.size) for g in net.graph.free}
    sizes = {g.name: g.size for g in net.graph.free}
    (free,) = select_widths(net, scores, [0.25])
    (floored,) = select_widths(net, scores, [0.25], min_fraction=0.25)
    assert min(free[g] / sizes[g] for g in sizes) < 0.25
    assert all(floored[g] >= np.ceil(0.25 * sizes[g]) for g in sizes)
    assert cost.macs(net, floored) <= 0.25 * cost.macs(net)
    with pytest.raises(ValueError, match="min_fraction"):
        select_widths(net, scores, [0.25], min_fraction=1.5)
    with pytest.raises(ValueError, match="infeasible"):
        select_widths(net, scores, [0.25], min_fraction=0.9)


def test_independent_levels_at_least_as_good_as_nested():
    net = subnets.zoo.create("ds-cnn-s", num_classes=12)
    rng = np.random.default_rng(2)
    scores = {g.name: rng.random(g.size) for g in net.graph.free}
    ind = select_widths(net, scores, [0.25, 0.5], order="independent")
    bu = select_widths(net, scores, [0.25, 0.5], order="bottom_up")
    assert _value(scores, ind[0]) == pytest.approx(_value(scores, bu[0]))
    assert _value(scores, ind[1]) >= _value(scores, bu[1]) - 1e-9


def test_full_fanin_cost_underuses_the_budget():
    """The reference's full fan-in pricing leaves most of a 25% budget unused."""
    net = subnets.zoo.create("ds-cnn-s", num_classes=12)
    scores = {g.name: np.random.default_rng(3).random(g.size) for g in net.graph.free}
    (approx,) = select_widths(net, scores, [0.25], cost="full_fanin")
    (exact,) = select_widths(net, scores, [0.25])
    assert cost.macs(net, approx) < cost.macs(net, exact) <= 0.25 * cost.macs(net)
    assert _value(scores, exact) > _value(scores, approx)


def test_two_resources_at_once():
    net = subnets.zoo.create("cnn-s", num_classes=12)
    scores = {g.name: np.random.default_rng(4).random(g.size) for g in net.graph.free}
    (w,) = select_widths(net, scores, [(0.5, 0.3)], resource=("macs", "params"))
    assert cost.macs(net, w) <= 0.5 * cost.macs(net)
    assert cost.params(net, w) <= 0.3 * cost.params(net)


def test_kernel_objective_uses_2d_prefix_sums():
    net = subnets.zoo.create("ds-cnn-s", num_classes=12)
    rng = np.random.default_rng(5)
    scores = {g.name: rng.random(g.size) for g in net.graph.free}
    ks = {("params", f"pw{i}", "kernel"): rng.random((64, 64)) for i in range(4)}
    (w,) = select_widths(net, scores, [0.5], objective="kernels", kernel_scores=ks)
    assert cost.macs(net, w) <= 0.5 * cost.macs(net)
    with pytest.raises(ValueError, match="needs kernel_scores"):
        select_widths(net, scores, [0.5], objective="kernels")


def test_budget_below_minimum_states_it():
    net = subnets.zoo.create("ds-cnn-s", num_classes=12)
    scores = {g.name: np.ones(g.size) for g in net.graph.free}
    with pytest.raises(ValueError, match=r"budget 0\.001 is infeasible.*smallest network"):
        select_widths(net, scores, [0.001])


def test_residual_graph_is_no_chain_but_select_widths_solves_it():
    net = subnets.zoo.create("cpreresnet20", num_classes=10)
    with pytest.raises(ValueError, match="not neighbours"):
        chain_order(net.graph)
    scores = {g.name: np.random.default_rng(6).random(g.size) for g in net.graph.free}
    levels = select_widths(net, scores, [0.25, 0.5])
    for w, f in zip(levels, [0.25, 0.5], strict=True):
        assert cost.macs(net, w) <= f * cost.macs(net)
        assert min(w.values()) >= 2
    assert all(levels[0][g] <= levels[1][g] for g in levels[0])
