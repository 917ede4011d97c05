"""Tests of the exact chain knapsack (subnets.kernels.knapsack.chain) against enumeration."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from subnets.kernels.knapsack import (
    FEAS_RTOL,
    brute_force_chain,
    evaluate_chain,
    greedy_chain,
    solve_chain,
)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _random_chain(data: st.DataObject, integer: bool):
    """A small random chain: G groups of up to 6 units, R resources, optional pair values.

    Integer-valued tables make every sum exact, so value and cost ties are real ties and the
    tie-breaking rule can be checked bit for bit.
    """
    G = data.draw(st.integers(1, 4), label="G")
    N = data.draw(st.integers(1, 6), label="Nmax")
    R = data.draw(st.integers(1, 3), label="R")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)

    def draw(shape, top):
        x = rng.integers(0, top + 1, shape) if integer else rng.random(shape) * top
        return np.asarray(x, dtype=np.float64)

    sizes = rng.integers(1, N + 1, G)
    U = np.zeros((G, N + 1))
    for g in range(G):
        U[g, 1: sizes[g] + 1] = np.cumsum(np.sort(draw(sizes[g], 9))[::-1])
    P = draw((G - 1, N + 1, N + 1), 4) if data.draw(st.booleans(), label="with P") else None
    if data.draw(st.booleans(), label="bilinear costs"):
        ar = np.arange(N + 1.0)
        CU = draw((R, G), 5)[:, :, None] * ar
        CP = draw((R, G - 1), 3)[:, :, None, None] * np.multiply.outer(ar, ar)
    else:  # general tables, neither monotone nor bilinear
        CU = draw((R, G, N + 1), 9)
        CP = draw((R, G - 1, N + 1, N + 1), 9)
    K = draw(R, 3)
    lo = np.array([rng.integers(1, s + 1) for s in sizes])
    hi = np.array([rng.integers(a, s + 1) for a, s in zip(lo, sizes, strict=True)])
    top = K + CU.max(axis=(1, 2)) * G + (CP.max(axis=(1, 2, 3)) * (G - 1) if G > 1 else 0.0)
    B = np.floor(data.draw(st.floats(0.0, 1.0), label="budget fraction") * top)
    if R > 1 and data.draw(st.booleans(), label="unbounded resource"):
        B[data.draw(st.integers(0, R - 1))] = np.inf
    return U, P, CU, CP, K, B, lo, hi


def _solve_or_none(fn, args):
    try:
        return fn(*args)
    except ValueError:
        return None


def _check_answer(args, answer):
    U, P, CU, CP, K, B, lo, hi = args
    widths, value, costs = answer
    assert widths.dtype == np.int64 and widths.shape == lo.shape
    assert np.all(lo <= widths) and np.all(widths <= hi)
    assert np.all(costs <= B + FEAS_RTOL * np.maximum(1.0, np.abs(B)))
    v, c = evaluate_chain(U, P, CU, CP, K, widths)
    assert value == v and np.array_equal(costs, c)  # reported numbers are the recomputed ones


def _solve_both(data: st.DataObject, integer: bool):
    """The DP and enumeration on one random chain: both infeasible, or the DP's answer checked.

    Returns ``(got, expected)``, both None when the chain is infeasible.
    """
    args = _random_chain(data, integer=integer)
    expected = _solve_or_none(brute_force_chain, args)
    got = _solve_or_none(solve_chain, args)
    assert (got is None) == (expected is None)
    if got is not None:
        _check_answer(args, got)
    return got, expected


@SETTINGS
@given(st.data())
def test_matches_brute_force_exactly_on_integer_tables(data):
    got, expected = _solve_both(data, integer=True)
    if got is None:
        return
    # Same optimum, same tie-breaking: lowest costs, then smaller widths from the last group back.
    assert got[1] == expected[1]
    np.testing.assert_array_equal(got[2], expected[2])
    np.testing.assert_array_equal(got[0], expected[0])


@SETTINGS
@given(st.data())
def test_matches_brute_force_on_float_tables(data):
    got, expected = _solve_both(data, integer=False)
    if got is None:
        return
    assert got[1] == pytest.approx(expected[1], rel=1e-12, abs=1e-12)


def _tiny():
    U = np.array([[0, 5, 8, 9], [0, 4, 7, 9]], float)
    CP = np.zeros((1, 1, 4, 4))
    CP[0, 0] = np.outer(np.arange(4), np.arange(4))
    return U, None, np.zeros((1, 2, 4)), CP


def test_infeasible_budget_states_the_minimum():
    U, P, CU, CP = _tiny()
    with pytest.raises(ValueError, match=r"minimum achievable cost per resource is \[9\.0\]"):
        solve_chain(U, P, CU, CP, [0.0], [8.0], [3, 3], [3, 3])
    with pytest.raises(ValueError, match=r"\[0\.5\]"):  # the budget is named too
        solve_chain(U, P, CU, CP, [0.0], [0.5], [1, 1], [3, 3])


def test_jointly_infeasible_resources():
    # Group 0 is cheap in resource 0 when narrow, in resource 1 when wide; never both.
    U = np.array([[0.0, 1.0, 2.0]])
    CU = np.array([[[0.0, 1.0, 5.0]], [[0.0, 5.0, 1.0]]])
    with pytest.raises(ValueError, match="at once"):
        solve_chain(U, None, CU, None, [0.0, 0.0], [2.0, 2.0], [1], [2])


def test_feasibility_tolerance_is_relative():
    U, P, CU, CP = _tiny()
    w, _, c = solve_chain(U, P, CU, CP, [0.0], [4.0 * (1 - 0.5 * FEAS_RTOL)], [1, 1], [3, 3])
    assert w.tolist() == [2, 2] and c[0] == 4.0  # over budget by less than the tolerance
    w, _, _ = solve_chain(U, P, CU, CP, [0.0], [4.0 * (1 - 2 * FEAS_RTOL)], [1, 1], [3, 3])
    assert w.tolist() != [2, 2]


def test_unbounded_resource_and_loose_budget():
    U, P, CU, CP = _tiny()
    CU2 = np.concatenate([CU, np.ones_like(CU)])
    CP2 = np.concatenate([CP, CP])
    w, v, c = solve_chain(U, P, CU2, CP2, [0.0, 0.0], [np.inf, 1e9], [1, 1], [3, 3])
    assert w.tolist() == [3, 3] and v == 18.0 and c.tolist() == [9.0, 11.0]


def test_padding_outside_the_box_is_ignored():
    U, P, CU, CP = _tiny()
    U[:, 3] = np.nan  # beyond hi: never read, never checked
    CP[0, 0, 3, :] = np.inf
    w, v, c = solve_chain(U, P, CU, CP, [0.0], [4.0], [1, 1], [2, 2])
    assert w.tolist() == [2, 2] and v == 15.0 and c.tolist() == [4.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lo": [0, 1]}, "1 <= lo <= hi"),
        ({"hi": [3, 4]}, "1 <= lo <= hi"),
        ({"lo": [3, 1], "hi": [2, 3]}, "1 <= lo <= hi"),
        ({"lo": [1.0, 1.0]}, "integers"),
        ({"CP": np.zeros((1, 2, 4, 4))}, "CP must have shape"),
        ({"P": np.zeros((2, 4, 4))}, "P must have shape"),
        ({"U": np.full((2, 4), np.nan)}, "not finite"),
        ({"B": [np.nan]}, r"a number or \+inf"),
        ({"B": [-np.inf]}, r"a number or \+inf"),
    ],
)
def test_malformed_input(kwargs, message):
    U, P, CU, CP = _tiny()
    args = {"U": U, "P": P, "CU": CU, "CP": CP, "K": [0.0], "B": [4.0], "lo": [1, 1], "hi": [3, 3]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        solve_chain(**args)


def _dscnn_l(rng, n=276, groups=6):
    """DS-CNN-L-sized chain: stem conv, 5 depthwise-separable blocks of 276 channels, classifier.

    MACs on a 25x5 map: stem 10x4 conv (5000 w0), depthwise 3x3 (1125 w), pointwise (125 w w'),
    dense 12 outputs; parameters as the second resource.
    """
    ar = np.arange(n + 1.0)
    U = np.zeros((groups, n + 1))
    for g in range(groups):
        U[g, 1:] = np.cumsum(np.sort(rng.lognormal(0.0, 1.0, n))[::-1])
    CU = np.zeros((2, groups, n + 1))
    CU[0, 0] += 5000 * ar
    CU[0, :-1] += 1125 * ar
    CU[0, -1] += 12 * ar
    CU[1, 0] += 41 * ar
    CU[1, :-1] += 10 * ar
    CU[1, 1:] += ar
    CU[1, -1] += 12 * ar
    CP = np.stack([125 * np.multiply.outer(ar, ar), np.multiply.outer(ar, ar)])
    CP = np.repeat(CP[:, None], groups - 1, axis=1)
    lo = np.ones(groups, np.int64)
    hi = np.full(groups, n, np.int64)
    return U, CU, CP, lo, hi


@pytest.mark.parametrize("resources", [1, 2])
def test_dscnn_l_sized_nested_levels_are_feasible_and_beat_greedy(resources):
    U, CU, CP, lo, hi = _dscnn_l(np.random.default_rng(resources))
    CU, CP = CU[:resources], CP[:resources]
    K = np.zeros(resources)
    _, full = evaluate_chain(U, None, CU, CP, K, hi)
    for fraction in (0.25, 0.5, 0.75):  # bottom-up: each level contains the previous one
        B = fraction * full
        args = (U, None, CU, CP, K, B, lo, hi)
        answer = solve_chain(*args)
        _check_answer(args, answer)
        _, greedy_value, _ = greedy_chain(*args)
        assert answer[1] >= greedy_value
        lo = answer[0]


def test_pair_values_dscnn_objective():
    # REDS' generalised DS-CNN objective: a pointwise kernel counts if filter and input are kept.
    rng = np.random.default_rng(0)
    U, CU, CP, lo, hi = _dscnn_l(rng, n=40, groups=4)
    scores = rng.random((3, 40, 40))
    P = np.zeros((3, 41, 41))
    P[:, 1:, 1:] = scores.cumsum(1).cumsum(2)
    _, full = evaluate_chain(U, P, CU[:1], CP[:1], [0.0], hi)
    args = (U, P, CU[:1], CP[:1], [0.0], 0.3 * full, lo, hi)
    answer = solve_chain(*args)
    _check_answer(args, answer)
    assert answer[1] >= greedy_chain(*args)[1]


@pytest.mark.parametrize("name", ["subnets.kernels", "subnets.kernels.knapsack",
                                  "subnets.kernels.knapsack.chain",
                                  "subnets.kernels.knapsack.graph"])
def test_docstring_examples(name):
    # test_docs walks subnets/ only; the kernels live in the top-level kernels/ folder
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 2 and result.failed == 0
