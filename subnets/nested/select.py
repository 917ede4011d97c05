"""REDS width selection: an exact knapsack over prefix widths, with the true coupled cost.

After the importance permutation, keeping the best ``k`` units of a group means keeping its first
``k``. The network's free groups form a chain (DNN, CNN, DS-CNN, VGG), so choosing one width per
group under a MAC (and/or parameter) budget is the chain knapsack that
:func:`subnets.kernels.knapsack.solve_chain` solves exactly. This module turns a net, importance
scores and budgets into that kernel's tables:

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

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from subnets import cost as _cost
from subnets.graph import ChannelGraph, Path
from subnets.kernels.knapsack import solve_chain

RESOURCES = ("macs", "params", "bytes")
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
                f"select_widths needs a chain of channel groups; layer {'/'.join(layer.path)} "
                f"joins {a!r} and {b!r}, which are not neighbours (a residual or branching "
                f"graph; choose widths with a uniform fraction instead)")
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
            for term in _param_terms(net):
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


def _param_terms(net: Any) -> list[tuple[float, list[str]]]:
    """Each params array as ``coeff * prod(widths of the groups on its axes)``."""
    graph = net.graph
    by_path = graph.members_by_path()
    shapes = _cost.array_shapes(net)
    terms = []
    for path, shape in shapes.items():
        coeff, names = float(math.prod(shape)), []
        for g, _m in by_path.get(path, ()):
            if g.fixed:
                continue
            coeff /= g.size
            names.append(g.name)
        terms.append((coeff, names))
    return terms


def _prefix_values(scores: np.ndarray) -> np.ndarray:
    s = np.sort(np.asarray(scores, np.float64))[::-1]
    return np.concatenate([[0.0], np.cumsum(s)])


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


def _budget_value(total: float, b: float, what: str) -> float:
    if b <= 0:
        raise ValueError(f"budget {b} for {what} must be positive")
    return b * total if b <= 1.0 else float(b)


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
    missing = [n for n in chain if n not in scores]
    if missing:
        raise ValueError(f"scores missing for groups {missing}")
    sc = {n: np.asarray(scores[n], np.float64) for n in chain}
    for n in chain:
        if sc[n].shape != (graph[n].size,):
            raise ValueError(f"scores for group {n!r} have shape {sc[n].shape}, "
                             f"expected ({graph[n].size},)")
    tables = [ChainTables(net, chain, r, cost) for r in resources]
    nmax = tables[0].nmax
    G, N = len(chain), nmax + 1
    U = np.zeros((G, N))
    for i, n in enumerate(chain):
        pre = _prefix_values(sc[n])
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
    floor = np.minimum(_floors(sizes, min_units, min_fraction), sizes)
    full = {r: _total(net, r) for r in resources}
    return ChainProblem(chain, U, P, CU, CP, K, sizes, floor, full)


def select_widths(net: Any, scores: Mapping[str, Any], budgets: Sequence[Any], *,
                  resource: str | Sequence[str] = "macs", order: str = "bottom_up",
                  min_units: int = 2, objective: str = "units", cost: str = "coupled",
                  kernel_scores: Mapping[Path, Any] | None = None,
                  min_fraction: float = 0.0) -> list[dict[str, int]]:
    """Choose one width per free group for each budget, maximising kept importance.

    Args:
        net: a zoo net (or anything with ``graph``, ``init``; the graph must be a chain).
        scores: ``{group: importance per unit}`` for every free group.
        budgets: one entry per level: a fraction of the full network's resource (``<= 1``) or
            an absolute amount (``> 1``); a tuple gives one budget per resource.
        resource: ``"macs"``, ``"params"``, ``"bytes"`` (int8 flash bytes), or a tuple of them
            constrained together.
        order: ``"bottom_up"`` (smallest budget first; each next level >= the previous in every
            group: REDS), ``"top_down"`` (largest first, each next level <= the previous), or
            ``"independent"`` (no nesting).
        min_units: at least this many units in every group.
        min_fraction: and at least ``ceil(min_fraction * size)`` units in every group. The
            knapsack's objective is additive, so nearly flat scores (e.g. normalised L1 norms)
            let it trade one layer's units for another's freely and pick alternating wide and
            narrow layers; a floor such as 0.125 rules out such bottlenecks.
        objective: ``"units"`` (sum of kept unit scores) or ``"kernels"`` (layers named in
            ``kernel_scores`` count every kept kernel instead of their output units).
        cost: ``"coupled"`` (exact) or ``"full_fanin"`` (the reference's MAC approximation).
        kernel_scores: ``{kernel path: [in, out] score matrix}`` for ``objective="kernels"``.

    Returns:
        One widths dict per budget, in the order given.

    Raises:
        ValueError: for a budget below the smallest feasible network (the message states the
            minimum), unknown groups, or a graph that is not a chain.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    resources = (resource,) if isinstance(resource, str) else tuple(resource)
    pb = chain_problem(net, scores, resource=resources, objective=objective, cost=cost,
                       kernel_scores=kernel_scores, min_units=min_units,
                       min_fraction=min_fraction)
    U, P, CU, CP, K, floor, full = pb.U, pb.P, pb.CU, pb.CP, pb.K, pb.floor, pb.full
    chain, sizes = pb.order, pb.sizes

    def budget_vec(b):
        bs = tuple(b) if isinstance(b, tuple | list) else (b,) * len(resources)
        if len(bs) != len(resources):
            raise ValueError(f"budget {b} has {len(bs)} entries for resources {resources}")
        return np.array([_budget_value(full[r], x, r) for r, x in zip(resources, bs,
                                                                      strict=True)])

    vecs = [budget_vec(b) for b in budgets]
    idx = list(range(len(budgets)))
    if order in ("bottom_up", "top_down"):
        idx.sort(key=lambda i: tuple(vecs[i]), reverse=(order == "top_down"))
    results: dict[int, dict[str, int]] = {}
    lo, hi = floor.copy(), sizes.copy()
    for i in idx:
        try:
            w, _, _ = solve_chain(U, P, CU, CP, K, vecs[i], lo, hi)
        except ValueError as e:
            if not str(e).startswith("infeasible"):
                raise
            raise ValueError(_infeasible_message(budgets[i], vecs[i], resources, full, U, P,
                                                 CU, CP, K, lo, floor, order)) from None
        results[i] = {n: int(w[j]) for j, n in enumerate(chain)}
        if order == "bottom_up":
            lo = np.asarray(w, np.int64)
        elif order == "top_down":
            hi = np.asarray(w, np.int64)
    return [results[i] for i in range(len(budgets))]


def _floors(sizes: np.ndarray, min_units: int, min_fraction: float) -> np.ndarray:
    """Per group, the fewest units a level may keep (before capping at the group's size)."""
    if not 0.0 <= float(min_fraction) <= 1.0:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
    frac = np.ceil(float(min_fraction) * sizes - 1e-9).astype(np.int64)
    return np.maximum(frac, max(1, int(min_units)))


def _total(net: Any, resource: str) -> float:
    if resource == "macs":
        return float(_cost.macs(net))
    return float(_cost.params(net))


def _infeasible_message(budget, vec, resources, full, U, P, CU, CP, K, lo, floor, order):
    from subnets.kernels.knapsack import evaluate_chain

    _, c_min = evaluate_chain(U, P, CU, CP, K, floor)
    _, c_lo = evaluate_chain(U, P, CU, CP, K, lo)
    parts = []
    for r, name in enumerate(resources):
        parts.append(f"{name}: budget {vec[r]:,.0f}, smallest network {c_min[r]:,.0f} "
                     f"({c_min[r] / full[name]:.4f} of full)")
    msg = f"budget {budget} is infeasible: " + "; ".join(parts)
    if order == "bottom_up" and np.any(lo != floor):
        msg += (f"; nested above the previous level, the minimum is "
                f"{', '.join(f'{c:,.0f}' for c in c_lo)}")
    return msg
