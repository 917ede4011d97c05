"""Knapsack tables of any graph of channel groups: values per group, costs per group and edge.

The free groups are the vertices; a layer between two free groups is an edge whose cost table is
``coeff * w_in * w_out`` (``coeff = positions * window``), a depthwise layer or one that touches a
fixed group is a per-group cost, and a parameter array is priced by the groups on its axes.
Several layers between the same two groups share one edge. :func:`graph_problem` gives the tables
:func:`subnets.kernels.knapsack.solve_graph` takes; :mod:`subnets.nested.select` uses them for
every graph that is not a chain.

Example:
    >>> import numpy as np, subnets
    >>> net = subnets.zoo.create("cpreresnet20", num_classes=10, input_shape=(32, 32, 3))
    >>> scores = {g.name: np.ones(g.size) for g in net.graph.free}
    >>> pb = graph_problem(net, scores)
    >>> len(pb.names), pb.edges.shape[1], pb.full["macs"] == subnets.cost.macs(net)
    (16, 2, True)

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.3 (the knapsack, there on chains only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from subnets import cost as _cost
from subnets.graph import Path
from subnets.nested.checks import RESOURCES, check_scores, floors


def param_terms(net: Any) -> list[tuple[float, list[str], str]]:
    """Each params array as ``coeff * prod(widths of the free groups on its axes)``."""
    graph = net.graph
    by_path = graph.members_by_path()
    terms = []
    for path, shape in _cost.array_shapes(net).items():
        coeff, names = float(math.prod(shape)), []
        for g, _m in by_path.get(path, ()):
            if g.fixed:
                continue
            coeff /= g.size
            names.append(g.name)
        terms.append((coeff, names, "/".join(map(str, path))))
    return terms


def prefix_values(scores: np.ndarray) -> np.ndarray:
    s = np.sort(np.asarray(scores, np.float64))[::-1]
    return np.concatenate([[0.0], np.cumsum(s)])


def total(net: Any, resource: str) -> float:
    if resource == "macs":
        return float(_cost.macs(net))
    return float(_cost.params(net))


class GraphProblem(NamedTuple):
    """The tables of :func:`subnets.kernels.knapsack.solve_graph` for a net's free groups.

    Built by :func:`graph_problem`; see its example. References: Corti et al., REDS
    (arXiv:2311.13349), Sec. 3.3.
    """

    names: list[str]  # free groups, in graph order
    edges: np.ndarray  # [E, 2] group indices
    U: np.ndarray  # [G, N+1] prefix values
    P: np.ndarray | None  # [E, N+1, N+1] edge values (objective="kernels")
    CU: np.ndarray  # [R, G, N+1]
    CP: np.ndarray  # [R, E, N+1, N+1]
    K: np.ndarray  # [R]
    sizes: np.ndarray  # [G]
    floor: np.ndarray  # [G]
    full: dict[str, float]


class _Builder:
    def __init__(self, names: list[str], nmax: int, R: int) -> None:
        self.pos = {n: i for i, n in enumerate(names)}
        self.w = np.arange(nmax + 1, dtype=np.float64)
        self.CU = np.zeros((R, len(names), nmax + 1))
        self.K = np.zeros(R)
        self.edge: dict[tuple[int, int], int] = {}
        self.CP: list[np.ndarray] = []
        self.R = R

    def unary(self, r: int, name: str, coeff: float, power: int = 1) -> None:
        self.CU[r, self.pos[name]] += coeff * self.w ** power

    def pair(self, r: int, a: str, b: str, coeff: float) -> None:
        if a == b:
            self.unary(r, a, coeff, 2)
            return
        i, j = self.pos[a], self.pos[b]
        key = (min(i, j), max(i, j))
        if key not in self.edge:
            self.edge[key] = len(self.CP)
            self.CP.append(np.zeros((self.R, self.w.size, self.w.size)))
        self.CP[self.edge[key]][r] += coeff * np.outer(self.w, self.w)

    def index(self, a: str, b: str) -> int:
        i, j = self.pos[a], self.pos[b]
        key = (min(i, j), max(i, j))
        if key not in self.edge:
            self.edge[key] = len(self.CP)
            self.CP.append(np.zeros((self.R, self.w.size, self.w.size)))
        return self.edge[key]


def _layer_costs(graph: Any, bld: _Builder, r: int, cost: str) -> None:
    free = bld.pos
    for layer in graph.layers:
        coeff = float(layer.positions * layer.window)
        a, b = layer.in_group, layer.out_group
        sa, sb = graph[a].size, graph[b].size
        if layer.kind == "depthwise":
            if a in free:
                bld.unary(r, a, coeff)
            else:
                bld.K[r] += coeff * sa
        elif cost == "full_fanin" and b in free:
            bld.unary(r, b, coeff * sa)
        elif a in free and b in free:
            bld.pair(r, a, b, coeff)
        elif a in free:
            bld.unary(r, a, coeff * sb)
        elif b in free:
            bld.unary(r, b, coeff * sa)
        else:
            bld.K[r] += coeff * sa * sb


def _param_costs(net: Any, bld: _Builder, r: int) -> None:
    for coeff, names, path in param_terms(net):
        if not names:
            bld.K[r] += coeff
        elif len(names) == 1:
            bld.unary(r, names[0], coeff)
        elif len(names) == 2:
            bld.pair(r, names[0], names[1], coeff)
        else:
            raise ValueError(f"array {path} couples {len(names)} free groups {names}; the "
                             f"knapsack prices at most two per array")


def graph_problem(net: Any, scores: Mapping[str, Any], *,
                  resource: str | Sequence[str] = "macs", objective: str = "units",
                  cost: str = "coupled", kernel_scores: Mapping[Path, Any] | None = None,
                  min_units: int = 2, min_fraction: float = 0.0) -> GraphProblem:
    """Build the exact graph-knapsack tables that :func:`select_widths` solves off chains.

    Arguments as in :func:`subnets.nested.select_widths`.

    References:
        Corti et al., REDS (arXiv:2311.13349), Sec. 3.3.
    """
    if cost not in ("coupled", "full_fanin"):
        raise ValueError(f"cost must be 'coupled' or 'full_fanin', got {cost!r}")
    resources = (resource,) if isinstance(resource, str) else tuple(resource)
    for r in resources:
        if r not in RESOURCES:
            raise ValueError(f"resource must be among {RESOURCES}, got {r!r}")
    graph = net.graph
    names = [g.name for g in graph.free]
    sc = check_scores(graph, scores, names)
    sizes = np.array([graph[n].size for n in names], np.int64)
    nmax = int(sizes.max())
    bld = _Builder(names, nmax, len(resources))
    for r, res in enumerate(resources):
        if res == "macs":
            _layer_costs(graph, bld, r, cost)
        else:
            _param_costs(net, bld, r)
    U = np.zeros((len(names), nmax + 1))
    for i, n in enumerate(names):
        pre = prefix_values(sc[n])
        U[i, : pre.size] = pre
    P = None
    if objective == "kernels":
        if not kernel_scores:
            raise ValueError("objective='kernels' needs kernel_scores")
        P = _kernel_values(graph, bld, sc, kernel_scores, U)
    elif objective != "units":
        raise ValueError(f"objective must be 'units' or 'kernels', got {objective!r}")
    E = len(bld.CP)
    edges = np.zeros((E, 2), np.int64)
    for (i, j), e in bld.edge.items():
        edges[e] = (i, j)
    N1 = nmax + 1
    CP = np.stack(bld.CP, axis=1) if E else np.zeros((len(resources), 0, N1, N1))
    if P is not None and P.shape[0] < E:
        P = np.concatenate([P, np.zeros((E - P.shape[0], N1, N1))])
    floor = np.minimum(floors(sizes, min_units, min_fraction), sizes)
    full = {r: total(net, r) for r in resources}
    return GraphProblem(names, edges, U, P, bld.CU, CP, bld.K.copy(), sizes, floor, full)


def _kernel_values(graph, bld, sc, kernel_scores, U):
    """Edge values from per-kernel scores: 2-D prefix sums in importance order of both groups."""
    layers = {layer.path: layer for layer in graph.layers}
    blocks: dict[int, np.ndarray] = {}
    N1 = U.shape[1]
    for path, mat in kernel_scores.items():
        layer = layers.get(tuple(path))
        if layer is None:
            raise ValueError(f"kernel_scores names {'/'.join(path)}, not a layer of the graph")
        a, b = layer.in_group, layer.out_group
        if a not in bld.pos or b not in bld.pos or a == b:
            raise ValueError(f"kernel_scores for {'/'.join(path)}: needs a layer between two "
                             f"free groups, got {a!r} -> {b!r}")
        mat = np.asarray(mat, np.float64)
        if mat.shape != (graph[a].size, graph[b].size):
            raise ValueError(f"kernel_scores for {'/'.join(path)} has shape {mat.shape}, "
                             f"expected {(graph[a].size, graph[b].size)}")
        if not np.all(np.isfinite(mat)):
            raise ValueError(f"kernel_scores for {'/'.join(path)} are not finite")
        mat = mat[np.argsort(-sc[a], kind="stable")][:, np.argsort(-sc[b], kind="stable")]
        pre = np.zeros((graph[a].size + 1, graph[b].size + 1))
        pre[1:, 1:] = mat.cumsum(0).cumsum(1)
        e = bld.index(a, b)
        tab = blocks.setdefault(e, np.zeros((N1, N1)))
        if bld.pos[a] < bld.pos[b]:
            tab[: pre.shape[0], : pre.shape[1]] += pre
        else:
            tab[: pre.shape[1], : pre.shape[0]] += pre.T
        U[bld.pos[b]] = 0.0
    P = np.zeros((len(bld.CP), N1, N1))
    for e, tab in blocks.items():
        P[e] = tab
    return P
