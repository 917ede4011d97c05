"""select_widths (the exact chain DP) against OR-Tools CP-SAT on nested MAC budgets.

CP-SAT's model is written here from the net's layer list, independently of the chain tables that
select_widths builds: one integer width per free group, a product variable per layer between two
free groups, and the kept importance as an element lookup in scaled integer prefix sums.
"""

import math

import numpy as np
import pytest

from subnets import cost, zoo
from subnets.nested.select import select_widths

cp_model = pytest.importorskip("ortools.sat.python.cp_model")

SCALE = 1e6  # scores lie in [0, 1): one rounding unit is 1e-6 of a unit's score


def _value(scores, widths):
    return sum(float(np.sort(scores[g])[::-1][:w].sum()) for g, w in widths.items())


def _cpsat(net, scores, budget, lower, min_units, seconds):
    graph = net.graph
    m = cp_model.CpModel()
    w = {g.name: m.NewIntVar(max(min_units, lower.get(g.name, 0)), g.size, g.name)
         for g in graph.free}

    def width(name):
        return w.get(name, graph[name].size)

    macs = []
    for layer in graph.layers:
        coeff = layer.positions * layer.window
        a, b = width(layer.in_group), width(layer.out_group)
        if layer.kind == "depthwise":
            macs.append(coeff * a)
        elif isinstance(a, int) or isinstance(b, int):
            macs.append(coeff * a * b)
        else:
            p = m.NewIntVar(0, graph[layer.in_group].size * graph[layer.out_group].size,
                            "x".join(layer.path))
            m.AddMultiplicationEquality(p, [a, b])
            macs.append(coeff * p)
    m.Add(sum(macs) <= math.floor(budget))
    vals = []
    for g in graph.free:
        table = [0] + [int(round(x * SCALE)) for x in np.cumsum(np.sort(scores[g.name])[::-1])]
        v = m.NewIntVar(0, table[-1], f"v_{g.name}")
        m.AddElement(w[g.name], table, v)
        vals.append(v)
    m.Maximize(sum(vals))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = seconds
    solver.parameters.num_workers = 2
    solver.parameters.random_seed = 0
    status = solver.Solve(m)
    assert status in (cp_model.OPTIMAL, cp_model.FEASIBLE), solver.StatusName(status)
    widths = {n: solver.Value(x) for n, x in w.items()}
    return widths, status == cp_model.OPTIMAL


@pytest.mark.parametrize("name", ["dnn-s", "ds-cnn-s"])
def test_nested_dp_matches_cpsat(name):
    net = zoo.create(name, num_classes=12)
    rng = np.random.default_rng(7)
    scores = {g.name: rng.random(g.size) for g in net.graph.free}
    budgets = [0.25, 0.5, 0.75]
    levels = select_widths(net, scores, budgets, min_units=2)
    total = cost.macs(net)
    tol = len(net.graph.free) * 0.5 / SCALE + 1e-9
    lower: dict[str, int] = {}
    for frac, dp in zip(budgets, levels, strict=True):
        budget = frac * total
        assert cost.macs(net, dp) <= budget
        # The same nested problem: CP-SAT's lower widths are the DP's previous level.
        cs, optimal = _cpsat(net, scores, budget, lower, 2, seconds=8.0)
        assert cost.macs(net, cs) <= budget
        v_dp, v_cs = _value(scores, dp), _value(scores, cs)
        assert v_dp >= v_cs - 1e-9, (frac, dp, cs)
        if optimal:
            assert v_dp == pytest.approx(v_cs, abs=tol), (frac, dp, cs)
        lower = dp
