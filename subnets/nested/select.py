"""REDS width selection: an exact knapsack over prefix widths, with the true coupled cost.

After the importance permutation, keeping the best ``k`` units of a group means keeping its first
``k``. Where the network's free groups form a chain (DNN, CNN, DS-CNN, VGG), choosing one width
per group under a MAC (and/or parameter) budget is the chain knapsack that
:func:`subnets.kernels.knapsack.solve_chain` solves exactly; any other graph of groups (residual
stages, branches that rejoin) is the graph knapsack of :func:`subnets.kernels.knapsack.solve_graph`,
exact over a path decomposition of the groups' interaction graph (tables:
:mod:`subnets.nested.tables`). This module turns a net, importance scores and budgets into the
kernels' tables:

* values ``U[g, w]`` are prefix sums of the group's scores sorted in descending order;
  with ``objective="kernels"`` (REDS' generalised DS-CNN objective) the value of a pointwise
  layer is the 2-D prefix sum of its per-kernel scores (kept filter x kept input channel);
* costs are the exact coupled MACs of every layer (``positions * window * w_in * w_out``,
  depthwise layers follow their group) or the exact parameter count of every array, or, with
  ``cost="full_fanin"``, the reference's approximation (each unit priced at full fan-in).

Example:
    >>> import jax, numpy as np, subnets
    >>> from subnets.nested import select_widths
    >>> net = subnets.zoo.create("dnn-s", num_classes=12)
    >>> scores = {g.name: np.random.default_rng(0).random(g.size) for g in net.graph.free}
    >>> levels = select_widths(net, scores, [0.25, 0.5])
    >>> [subnets.cost.macs(net, w) <= f * subnets.cost.macs(net) for w, f in
    ...  zip(levels, [0.25, 0.5])]
    [True, True]

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.3 and Appendix A (iterative knapsack,
    bottom-up 2/3-Opt guarantee).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from subnets.graph import ChannelGraph, Path
from subnets.kernels.knapsack import (
    MAX_STATES,
    evaluate_chain,
    evaluate_graph,
    lagrangian_graph,
    solve_chain,
    solve_graph,
)
from subnets.nested.checks import (
    RESOURCES,
    check_budget_list,
    check_min_fraction,
    check_min_units,
    check_scores,
    floors,
    parse_budget,
)
from subnets.nested.tables import graph_problem, param_terms, prefix_values, total

__all__ = ["RESOURCES", "ORDERS", "ChainProblem", "chain_order", "chain_problem", "select_widths"]
ORDERS = ("bottom_up", "top_down", "independent")


def chain_order(graph: ChannelGraph) -> list[str]:
    """Free groups in chain order, or a ValueError naming the layer that breaks the chain."""
    order: list[str] = []
    for layer in graph.layers:
        for name in (layer.in_group, layer.out_group):
            if not graph[name].fixed and name not in order:
                order.append(name)
    pos = {n: i for i, n in enumerate(order)}
    for layer in graph.layers:
        a, b = layer.in_group, layer.out_group
        if a in pos and b in pos and pos[b] - pos[a] not in (0, 1):
            raise ValueError(
                f"not a chain of channel groups: layer {'/'.join(layer.path)} joins {a!r} and "
                f"{b!r}, which are not neighbours (a residual or branching graph: "
                f"select_widths solves it with the graph knapsack, see graph_problem)")
    return order


class ChainTables:
    """Cost tables of one resource over a chain, exact for every width assignment."""

    def __init__(self, net: Any, order: list[str], resource: str, cost: str) -> None:
        graph = net.graph
        self.order, self.pos = order, {n: i for i, n in enumerate(order)}
        self.nmax = max(graph[n].size for n in order)
        G, N = len(order), self.nmax + 1
        self.CU = np.zeros((G, N))
        self.CP = np.zeros((max(G - 1, 0), N, N))
        self.K = 0.0
        w = np.arange(N, dtype=np.float64)
        if resource == "macs":
            for layer in graph.layers:
                self._add_layer(graph, layer, w, cost)
        else:  # "params", or "bytes" of an int8 model: one byte per parameter
            for term in [t[:2] for t in param_terms(net)]:
                self._add_term(*term, w)

    def _add_layer(self, graph, layer, w, cost):
        coeff = float(layer.positions * layer.window)
        a, b = layer.in_group, layer.out_group
        size = graph[a].size
        if layer.kind == "depthwise":
            self._unary(a, coeff, w)
        elif cost == "full_fanin" and b in self.pos:
            # The reference: a unit costs its full fan-in, whatever the previous width is.
            self._unary(b, coeff * size, w)
        elif a in self.pos and b in self.pos:
            i, j = self.pos[a], self.pos[b]
            self.CP[min(i, j)] += coeff * np.outer(w, w)
        elif a in self.pos:
            self._unary(a, coeff * graph[b].size, w)
        elif b in self.pos:
            self._unary(b, coeff * size, w)
        else:
            self.K += coeff * size * graph[b].size

    def _unary(self, name, coeff, w):
        self.CU[self.pos[name]] += coeff * w

    def _add_term(self, coeff, names, w):
        names = [n for n in names if n in self.pos]
        if not names:
            self.K += coeff
        elif len(names) == 1:
            self.CU[self.pos[names[0]]] += coeff * w
        else:
            i, j = sorted(self.pos[n] for n in names)
            if j - i != 1:
                raise ValueError(f"an array couples groups {names} that are not neighbours")
            self.CP[i] += coeff * np.outer(w, w)


def _kernel_values(graph, order, scores, kernel_scores, nmax):
    """P tables from per-kernel scores: 2-D prefix sums in importance order of both groups."""
    G, N = len(order), nmax + 1
    P = np.zeros((max(G - 1, 0), N, N))
    covered = set()
    pos = {n: i for i, n in enumerate(order)}
    layers = {layer.path: layer for layer in graph.layers}
    for path, mat in kernel_scores.items():
        layer = layers.get(tuple(path))
        if layer is None:
            raise ValueError(f"kernel_scores names {'/'.join(path)}, not a layer of the graph")
        a, b = layer.in_group, layer.out_group
        if a not in pos or b not in pos or pos[b] != pos[a] + 1:
            raise ValueError(f"kernel_scores for {'/'.join(path)}: needs a layer between two "
                             f"neighbouring free groups, got {a!r} -> {b!r}")
        mat = np.asarray(mat, np.float64)
        if mat.shape != (graph[a].size, graph[b].size):
            raise ValueError(f"kernel_scores for {'/'.join(path)} has shape {mat.shape}, "
                             f"expected {(graph[a].size, graph[b].size)}")
        mat = mat[np.argsort(-scores[a], kind="stable")][:, np.argsort(-scores[b], kind="stable")]
        pre = np.zeros((graph[a].size + 1, graph[b].size + 1))
        pre[1:, 1:] = mat.cumsum(0).cumsum(1)
        P[pos[a], : pre.shape[0], : pre.shape[1]] += pre
        covered.add(b)
    return P, covered


class ChainProblem(NamedTuple):
    """The knapsack tables of a net's chain, as :func:`solve_chain` takes them.

    Built by :func:`chain_problem`; see its example. References: Corti et al., REDS
    (arXiv:2311.13349), Sec. 3.3.
    """

    order: list[str]  # free groups in chain order
    U: np.ndarray  # [G, N+1] prefix values
    P: np.ndarray | None  # [G-1, N+1, N+1] pair values (objective="kernels")
    CU: np.ndarray  # [R, G, N+1] unit costs
    CP: np.ndarray  # [R, G-1, N+1, N+1] pair costs
    K: np.ndarray  # [R] fixed costs
    sizes: np.ndarray  # [G] full widths
    floor: np.ndarray  # [G] max(min_units, ceil(min_fraction * size)), capped at the sizes
    full: dict[str, float]  # each resource of the full network


def chain_problem(net: Any, scores: Mapping[str, Any], *,
                  resource: str | Sequence[str] = "macs", objective: str = "units",
                  cost: str = "coupled", kernel_scores: Mapping[Path, Any] | None = None,
                  min_units: int = 2, min_fraction: float = 0.0) -> ChainProblem:
    """Build the exact chain-knapsack tables that :func:`select_widths` solves.

    Arguments as in :func:`select_widths`; useful to hand the same problem to another solver
    (``benchmarks/knapsack.py`` gives it to CP-SAT). ``U[i, w]`` is the summed importance of the
    first ``w`` units of group ``order[i]``; a width assignment costs ``K + sum CU + sum CP``
    per resource.

    Example:
        >>> import numpy as np, subnets
        >>> net = subnets.zoo.create("dnn-s", num_classes=4, input_shape=(8,))
        >>> scores = {g.name: np.ones(g.size) for g in net.graph.free}
        >>> pb = chain_problem(net, scores)
        >>> pb.order, float(pb.U[0, 3]), pb.full["macs"] == subnets.cost.macs(net)
        (['h0', 'h1', 'h2'], 3.0, True)

    References:
        Corti et al., REDS (arXiv:2311.13349), Sec. 3.3 (the knapsack formulation).
    """
    if cost not in ("coupled", "full_fanin"):
        raise ValueError(f"cost must be 'coupled' or 'full_fanin', got {cost!r}")
    resources = (resource,) if isinstance(resource, str) else tuple(resource)
    for r in resources:
        if r not in RESOURCES:
            raise ValueError(f"resource must be among {RESOURCES}, got {r!r}")
    graph = net.graph
    chain = chain_order(graph)
    sc = check_scores(graph, scores, chain)
    tables = [ChainTables(net, chain, r, cost) for r in resources]
    nmax = tables[0].nmax
    G, N = len(chain), nmax + 1
    U = np.zeros((G, N))
    for i, n in enumerate(chain):
        pre = prefix_values(sc[n])
        U[i, : pre.size] = pre
    P = None
    if objective == "kernels":
        if not kernel_scores:
            raise ValueError("objective='kernels' needs kernel_scores")
        P, covered = _kernel_values(graph, chain, sc, kernel_scores, nmax)
        for n in covered:
            U[chain.index(n)] = 0.0
    elif objective != "units":
        raise ValueError(f"objective must be 'units' or 'kernels', got {objective!r}")
    CU = np.stack([t.CU for t in tables])
    CP = np.stack([t.CP for t in tables])
    K = np.array([t.K for t in tables])
    sizes = np.array([graph[n].size for n in chain], np.int64)
    floor = np.minimum(floors(sizes, min_units, min_fraction), sizes)
    full = {r: total(net, r) for r in resources}
    return ChainProblem(chain, U, P, CU, CP, K, sizes, floor, full)


def select_widths(net: Any, scores: Mapping[str, Any], budgets: Sequence[Any], *,
                  resource: str | Sequence[str] = "macs", order: str = "bottom_up",
                  min_units: int = 2, objective: str = "units", cost: str = "coupled",
                  kernel_scores: Mapping[Path, Any] | None = None,
                  min_fraction: float = 0.0, absolute: bool = False,
                  heuristic: str | None = None, max_states: int = MAX_STATES,
                  return_info: bool = False) -> Any:
    """Choose one width per free group for each budget, maximising kept importance.

    Chains (DNN, CNN, DS-CNN) go to :func:`subnets.kernels.knapsack.solve_chain`; any other graph
    of groups (residual stages, branches that rejoin) to the exact
    :func:`subnets.kernels.knapsack.solve_graph` over a path decomposition of the groups'
    interaction graph, with the same objective, costs, floors, orders and tie rule.

    Args:
        net: a model (anything with ``graph``).
        scores: ``{group: importance per unit}`` for every free group (finite numbers).
        budgets: a list, one entry per level: a fraction of the full network's resource in
            ``(0, 1]``, or an amount with its unit (``"2e6 macs"``); a tuple gives one budget per
            resource.
        resource: ``"macs"``, ``"params"``, ``"bytes"`` (int8 flash bytes), or a tuple of them
            constrained together.
        order: ``"bottom_up"`` (smallest budget first; each next level >= the previous in every
            group: REDS), ``"top_down"`` (largest first, each next level <= the previous), or
            ``"independent"`` (no nesting).
        min_units: at least this many units (>= 1) in every group.
        min_fraction: and at least ``ceil(min_fraction * size)`` units in every group. The
            knapsack's objective is additive, so nearly flat scores (e.g. normalised L1 norms)
            let it trade one layer's units for another's freely and pick alternating wide and
            narrow layers; a floor such as 0.125 rules out such bottlenecks.
        objective: ``"units"`` (sum of kept unit scores) or ``"kernels"`` (layers named in
            ``kernel_scores`` count every kept kernel instead of their output units).
        cost: ``"coupled"`` (exact) or ``"full_fanin"`` (the reference's MAC approximation).
        kernel_scores: ``{kernel path: [in, out] score matrix}`` for ``objective="kernels"``.
        absolute: read bare numbers in ``budgets`` as absolute amounts.
        heuristic: ``None`` (exact; a graph too wide for it is an error naming the groups of
            the widest bag) or ``"lagrangian"`` (Lagrangian relaxation on a non-chain graph:
            feasible, nested levels with a reported optimality gap; chains stay exact).
        max_states: the widest bag (in width combinations) the exact graph DP accepts.
        return_info: also return one dict per level: ``value`` (kept importance), ``bound``
            (an upper bound on the optimum; equal to value when exact), ``gap``, ``exact``,
            ``solver``.

    Returns:
        One widths dict per budget, in the order given (and the infos if ``return_info``).

    Raises:
        ValueError: for a budget below the smallest feasible network (the message states the
            minimum), a bad budget, score or floor (the message names the value or group), or
            a graph too wide for the exact DP.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if heuristic not in (None, "lagrangian"):
        raise ValueError(f"heuristic must be None or 'lagrangian', got {heuristic!r}")
    budgets = check_budget_list(budgets)
    min_units = check_min_units(min_units)
    min_fraction = check_min_fraction(min_fraction)
    resources = (resource,) if isinstance(resource, str) else tuple(resource)
    kw = dict(resource=resources, objective=objective, cost=cost, kernel_scores=kernel_scores,
              min_units=min_units, min_fraction=min_fraction)
    try:
        chain_order(net.graph)
        is_chain = True
    except ValueError:
        is_chain = False
    if is_chain:
        pb = chain_problem(net, scores, **kw)
        names, full = pb.order, pb.full
    else:
        gp = graph_problem(net, scores, **kw)
        names, full = gp.names, gp.full
    vecs = [np.array(parse_budget(b, resources, full, absolute=absolute)) for b in budgets]
    idx = list(range(len(budgets)))
    if order in ("bottom_up", "top_down"):
        idx.sort(key=lambda i: tuple(vecs[i]), reverse=(order == "top_down"))
    if is_chain:
        def solve(B, lo, hi):
            w, v, c = solve_chain(pb.U, pb.P, pb.CU, pb.CP, pb.K, B, lo, hi)
            return w, {"value": v, "bound": v, "gap": 0.0, "exact": True, "solver": "chain"}
        floor, sizes = pb.floor, pb.sizes
        evaluate = lambda w: evaluate_chain(pb.U, pb.P, pb.CU, pb.CP, pb.K, w)  # noqa: E731
    else:
        def solve(B, lo, hi):
            args = (gp.U, gp.P, gp.CU, gp.CP, gp.K, B, lo, hi, gp.edges)
            if heuristic == "lagrangian":
                w, v, c, bound = lagrangian_graph(*args, names=gp.names)
                return w, {"value": v, "bound": bound, "gap": bound - v,
                           "exact": False, "solver": "lagrangian"}
            w, v, c = solve_graph(*args, names=gp.names, max_states=max_states)
            return w, {"value": v, "bound": v, "gap": 0.0, "exact": True, "solver": "graph"}
        floor, sizes = gp.floor, gp.sizes
        evaluate = lambda w: evaluate_graph(gp.U, gp.P, gp.CU, gp.CP, gp.K, w,  # noqa: E731
                                            gp.edges)
    results: dict[int, dict[str, int]] = {}
    infos: dict[int, dict] = {}
    lo, hi = floor.copy(), sizes.copy()
    for i in idx:
        try:
            w, info = solve(vecs[i], lo, hi)
        except ValueError as e:
            if not str(e).startswith("infeasible"):
                raise
            raise ValueError(_infeasible_message(budgets[i], vecs[i], resources, full,
                                                 evaluate, lo, floor, order)) from None
        results[i] = {n: int(w[j]) for j, n in enumerate(names)}
        infos[i] = info
        if order == "bottom_up":
            lo = np.asarray(w, np.int64)
        elif order == "top_down":
            hi = np.asarray(w, np.int64)
    levels = [results[i] for i in range(len(budgets))]
    if return_info:
        return levels, [infos[i] for i in range(len(budgets))]
    return levels


def _infeasible_message(budget, vec, resources, full, evaluate, lo, floor, order):
    _, c_min = evaluate(floor)
    _, c_lo = evaluate(lo)
    parts = []
    for r, name in enumerate(resources):
        parts.append(f"{name}: budget {vec[r]:,.0f}, smallest network {c_min[r]:,.0f} "
                     f"({c_min[r] / full[name]:.4f} of full)")
    msg = f"budget {budget} is infeasible: " + "; ".join(parts)
    if order == "bottom_up" and np.any(lo != floor):
        msg += (f"; nested above the previous level, the minimum is "
                f"{', '.join(f'{c:,.0f}' for c in c_lo)}")
    return msg
