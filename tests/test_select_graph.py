"""The exact graph knapsack (residual and branching groups) against enumeration.

Kernel level: random small graphs with cycles and rejoining branches, integer tables (so ties are
real ties), zeros, several resources, nesting bounds: solve_graph's value and costs equal brute
force's (highest value, then lowest costs). Net level: tiny pre-activation ResNets through
select_widths: the objective equals brute force over every width assignment, levels are nested
and within budget.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from subnets.kernels.knapsack import (
    FEAS_RTOL,
    TooWideError,
    brute_force_graph,
    decompose,
    evaluate_graph,
    lagrangian_graph,
    solve_chain,
    solve_graph,
)
from subnets.zoo.resnet import PreResNetConfig, make_preresnet

from subnets import cost
from subnets.nested.select import select_widths

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _random_graph(data):
    G = data.draw(st.integers(2, 5), label="G")
    N = data.draw(st.integers(1, 4), label="Nmax")
    R = data.draw(st.integers(1, 3), label="R")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    # A spanning tree plus extra edges: cycles (residual blocks) and rejoining branches.
    edges = [(int(rng.integers(0, g)), g) for g in range(1, G)]
    pairs = [(a, b) for a in range(G) for b in range(a + 1, G) if (a, b) not in edges]
    extra = data.draw(st.integers(0, len(pairs)), label="extra edges")
    edges += [pairs[i] for i in rng.permutation(len(pairs))[:extra]]
    E = len(edges)
    sizes = rng.integers(1, N + 1, G)
    U = np.zeros((G, N + 1))
    for g in range(G):  # integer scores with ties and zeros
        U[g, 1: sizes[g] + 1] = np.cumsum(np.sort(rng.integers(0, 4, sizes[g]))[::-1])
    P = rng.integers(0, 3, (E, N + 1, N + 1)).astype(float) if data.draw(st.booleans()) else None
    ar = np.arange(N + 1.0)
    CU = rng.integers(0, 4, (R, G))[:, :, None] * ar
    CP = rng.integers(0, 3, (R, E))[:, :, None, None] * np.multiply.outer(ar, ar)
    K = rng.integers(0, 3, R).astype(float)
    lo = np.array([rng.integers(1, s + 1) for s in sizes])
    hi = np.array([rng.integers(a, s + 1) for a, s in zip(lo, sizes, strict=True)])
    top = K + CU.sum(axis=(1, 2)) + CP.sum(axis=(1, 2, 3))
    B = np.floor(data.draw(st.floats(0.0, 1.0), label="budget") * top)
    if R > 1 and data.draw(st.booleans(), label="unbounded resource"):
        B[data.draw(st.integers(0, R - 1))] = np.inf
    return U, P, CU, CP, K, B, lo, hi, np.array(edges)


def _or_none(fn, args):
    try:
        return fn(*args)
    except ValueError as e:
        assert "infeasible" in str(e)
        return None


@SETTINGS
@given(data=st.data())
def test_graph_dp_equals_brute_force(data):
    args = _random_graph(data)
    expected = _or_none(brute_force_graph, args)
    got = _or_none(solve_graph, args)
    assert (got is None) == (expected is None)
    if got is None:
        return
    w, v, c = got
    U, P, CU, CP, K, B, lo, hi, edges = args
    assert np.all(lo <= w) and np.all(w <= hi)
    v2, c2 = evaluate_graph(U, P, CU, CP, K, w, edges)
    assert v == v2 and np.array_equal(c, c2)
    assert np.all(c <= B + FEAS_RTOL * np.maximum(1.0, np.abs(B)))
    # integer tables: sums are exact, so value and the lowest-cost tie rule match exactly
    assert v == expected[1]
    assert np.array_equal(c, expected[2])


@SETTINGS
@given(data=st.data())
def test_lagrangian_is_feasible_and_bounded(data):
    args = _random_graph(data)
    expected = _or_none(brute_force_graph, args)
    if expected is None:
        return
    try:
        w, v, c, bound = lagrangian_graph(*args)
    except ValueError as e:
        assert "no assignment" in str(e)
        return
    B = args[5]
    assert np.all(c <= B + FEAS_RTOL * np.maximum(1.0, np.abs(B)))
    assert v <= expected[1] + 1e-9 <= bound + 2e-9


def test_chain_graph_agrees_with_chain_kernel():
    rng = np.random.default_rng(0)
    G, N = 6, 30
    U = np.zeros((G, N + 1))
    U[:, 1:] = np.cumsum(np.sort(rng.random((G, N)), axis=1)[:, ::-1], axis=1)
    ar = np.arange(N + 1.0)
    CP = rng.integers(1, 9, (1, G - 1))[:, :, None, None] * np.multiply.outer(ar, ar)
    CU = rng.integers(1, 9, (1, G))[:, :, None] * ar
    B = 0.3 * (CU[0, :, N].sum() + CP[0, :, N, N].sum())
    edges = [(g, g + 1) for g in range(G - 1)]
    wc, vc, _ = solve_chain(U, None, CU, CP, 0.0, B, 1, N)
    wg, vg, _ = solve_graph(U, None, CU, CP, 0.0, B, 1, N, edges)
    assert vg == pytest.approx(vc, rel=1e-12)
    order, bags = decompose(edges, [N] * G)
    assert max(len(b) for b in bags) == 2


def test_too_wide_names_the_groups():
    G = 6
    edges = list(itertools.combinations(range(G), 2))  # a clique: every bag holds all groups
    U = np.zeros((G, 9))
    U[:, 1:] = np.arange(1, 9)
    names = [f"grp{g}" for g in range(G)]
    with pytest.raises(TooWideError, match=r"widest bag \['grp.*grp.*'\].*heuristic='lagrangian'"):
        solve_graph(U, None, np.zeros((1, G, 9)), np.zeros((1, len(edges), 9, 9)), 0.0, 10.0,
                    1, 8, edges, names=names, max_states=1000)


def _tiny_resnet(draw):
    # Channel axes of size 1 are not traceable (they look like broadcasting): sizes from 2.
    cfg = PreResNetConfig(stem=draw(st.integers(2, 3)), planes=(draw(st.integers(2, 3)),),
                          blocks=draw(st.integers(1, 2)), expansion=draw(st.integers(1, 2)))
    return make_preresnet("tiny-resnet", cfg, 2, (4, 4, 1), "batch")


def _value(scores, widths):
    return sum(np.sort(scores[g])[::-1][:w].sum() for g, w in widths.items())


def _brute(net, scores, budgets, resources, lower):
    free = net.graph.free
    best, arg = -1.0, None
    for ws in itertools.product(*[range(lower.get(g.name, 1), g.size + 1) for g in free]):
        w = dict(zip([g.name for g in free], ws, strict=True))
        c = [cost.macs(net, w) if r == "macs" else cost.params(net, w) for r in resources]
        if all(x <= b * (1 + 1e-9) for x, b in zip(c, budgets, strict=True)):
            v = _value(scores, w)
            if v > best:
                best, arg = v, w
    return best, arg


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_residual_net_levels_equal_brute_force_nested(data):
    net = _tiny_resnet(data.draw)
    rng = np.random.default_rng(data.draw(st.integers(0, 10**6)))
    # integer scores: ties and zeros
    scores = {g.name: rng.integers(0, 3, g.size).astype(float) for g in net.graph.free}
    resources = data.draw(st.sampled_from([("macs",), ("params",), ("macs", "params")]))
    fracs = sorted(data.draw(st.lists(st.floats(0.3, 1.0), min_size=1, max_size=3)))
    budgets = [tuple([f] * len(resources)) for f in fracs]
    full = [cost.macs(net) if r == "macs" else cost.params(net) for r in resources]
    try:
        levels = select_widths(net, scores, budgets, resource=resources, min_units=1)
    except ValueError as e:
        assert "infeasible" in str(e)
        assert _brute(net, scores, [fracs[0] * f for f in full], resources, {})[1] is None
        return
    lower: dict[str, int] = {}
    for f, w in zip(fracs, levels, strict=True):
        caps = [f * x for x in full]
        got = [cost.macs(net, w) if r == "macs" else cost.params(net, w) for r in resources]
        assert all(g <= c * (1 + 1e-9) for g, c in zip(got, caps, strict=True))
        assert all(w[g] >= lower.get(g, 1) for g in w)  # nested
        best, _ = _brute(net, scores, caps, resources, lower)
        assert _value(scores, w) == best
        lower = w
