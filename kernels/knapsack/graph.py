"""Exact knapsack over prefix widths on a graph of channel groups of small treewidth.

The chain knapsack of :mod:`subnets.kernels.knapsack.chain` generalised: groups ``g = 0..G-1``
are vertices, and every layer (or parameter array) that couples two groups is an edge ``e =
(a_e, b_e)`` with value and cost tables indexed by the two widths:

    maximise   V(w)   = sum_g U[g, w_g] + sum_e P[e, w_a, w_b]
    subject to C_r(w) = K_r + sum_g CU[r, g, w_g] + sum_e CP[r, e, w_a, w_b] <= B_r

for every resource ``r``, ``lo <= w <= hi``. Residual stages (one stream group shared by all
blocks, each block a short cycle stream -> inner -> inner -> stream), depthwise ties and branches
that rejoin all give such graphs.

Method. A *path decomposition* orders the vertices; after assigning vertex ``t`` the DP state is
the widths of the frontier ``F_t`` (assigned vertices with a neighbour still to come), so every
future term depends on the state alone and the chain DP's argument carries over: labels (partial
assignments kept as cost vector and value) of one state are pruned by Pareto dominance, by the
least remaining cost (a backward min-plus pass over the states) and by Lagrangian value bounds
(backward max-plus passes), with the incumbent and multipliers found exactly as for chains
(cutting-plane dual search, greedy fill, the DP on a small box around the incumbent). The order is
greedy: from every start vertex, repeatedly take the vertex that leaves the smallest frontier
(then the smallest bag ``F_{t-1} + {t}``); keep the order with the least total work. A chain
gives the chain order and bags of two. Where the widest bag would exceed ``max_states``
combinations, the error names its groups; :func:`lagrangian_graph` is the explicit fallback,
returning a feasible answer and its optimality gap.

Ties and numerics as in the chain solver: feasibility within ``FEAS_RTOL``; among optimal
assignments the one of lowest cost (resource 0 first, ...); among assignments equal in value and
every cost, a deterministic one (the first met in the decomposition order). Values and costs are
summed step by step in the decomposition order, the order :func:`evaluate_graph` uses.

References:
    Corti et al., "REDS: Resource-Efficient Deep Subnetworks for Dynamic Resource Constraints",
    arXiv:2311.13349. Bodlaender, "A partial k-arboretum of graphs with bounded treewidth" (1998).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from ._chain_dual import _dual_search, _prepare_bounds
from ._graph_dp import (
    _g_bound_tables,
    _g_dp,
    _g_evaluate,
    _g_greedy_fill,
    _g_lagrangian,
    _g_min_tail,
    _state_offsets,
)
from .chain import FEAS_RTOL, _Incumbent

MAX_STATES = 1 << 23
"""Default limit on the width combinations of one bag (its DP step enumerates them all)."""

_VAL_RTOL = 1e-9
_WINDOW = 4


class TooWideError(ValueError):
    """The path decomposition has a bag with more width combinations than allowed."""


def decompose(edges: ArrayLike, radix: Sequence[int]) -> tuple[list[int], list[list[int]]]:
    """A vertex order and its bags ``F_{t-1} + {t}``, chosen greedily for little work.

    Example:
        >>> order, bags = decompose([[0, 1], [1, 2], [2, 0]], [3, 3, 3])
        >>> order, max(len(b) for b in bags)
        ([0, 1, 2], 3)
    """
    G = len(radix)
    nbr: list[set[int]] = [set() for _ in range(G)]
    for a, b in np.asarray(edges, np.int64).reshape(-1, 2):
        if a != b:
            nbr[a].add(int(b))
            nbr[b].add(int(a))
    logr = [math.log(max(int(r), 1)) for r in radix]
    best = None
    for s in range(G):
        order, done, frontier, work, bags = [], set(), [], 0.0, []
        nxt = s
        while True:
            done.add(nxt)
            order.append(nxt)
            bag = [*frontier, nxt]
            bags.append(bag)
            work += math.exp(sum(logr[u] for u in bag))
            frontier = [u for u in bag if nbr[u] - done]
            if len(order) == G:
                break
            cands = [v for v in range(G) if v not in done]

            def cost(v, frontier=frontier, done=done):
                after = [u for u in [*frontier, v] if nbr[u] - done - {v}]
                return (sum(logr[u] for u in after), sum(logr[u] for u in frontier) + logr[v],
                        -len(nbr[v] & set(frontier)), v)

            nxt = min(cands, key=cost)
        if best is None or work < best[0] - 1e-9:
            best = (work, order, bags)
    return best[1], best[2]


class _GraphProblem:
    """Validated tables, relabelled into decomposition order (vertex ``t`` = step ``t``)."""

    def __init__(self, U, P, CU, CP, K, B, lo, hi, edges, *, names=None,
                 max_states=MAX_STATES):
        U = np.asarray(U, dtype=np.float64)
        if U.ndim != 2 or U.shape[0] < 1 or U.shape[1] < 2:
            raise ValueError(f"U must have shape (G, Nmax+1) with G >= 1, got {U.shape}")
        G, N1 = U.shape
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        E = edges.shape[0]
        if E and (edges.min() < 0 or edges.max() >= G or np.any(edges[:, 0] == edges[:, 1])):
            raise ValueError(f"edges must join two different groups among 0..{G - 1}")
        CU = np.asarray(CU, dtype=np.float64)
        if CU.ndim == 2:
            CU = CU[None]
        if CU.ndim != 3 or CU.shape[1:] != (G, N1):
            raise ValueError(f"CU must have shape (R, {G}, {N1}), got {CU.shape}")
        R = CU.shape[0]
        P = np.zeros((E, N1, N1)) if P is None else np.asarray(P, dtype=np.float64)
        if P.shape != (E, N1, N1):
            raise ValueError(f"P must have shape {(E, N1, N1)}, got {P.shape}")
        CP = np.zeros((R, E, N1, N1)) if CP is None else np.asarray(CP, dtype=np.float64)
        if CP.ndim == 3:
            CP = CP[None]
        if CP.shape != (R, E, N1, N1):
            raise ValueError(f"CP must have shape {(R, E, N1, N1)}, got {CP.shape}")
        K = np.broadcast_to(np.asarray(K, dtype=np.float64), (R,)).copy()
        B = np.broadcast_to(np.asarray(B, dtype=np.float64), (R,)).copy()
        lo = np.broadcast_to(np.asarray(lo), (G,))
        hi = np.broadcast_to(np.asarray(hi), (G,))
        if not (np.issubdtype(lo.dtype, np.integer) and np.issubdtype(hi.dtype, np.integer)):
            raise ValueError("lo and hi must be integers")
        names = list(names) if names is not None else [str(g) for g in range(G)]
        for g in range(G):
            if not 1 <= lo[g] <= hi[g] <= N1 - 1:
                raise ValueError(f"group {names[g]}: need 1 <= lo <= hi <= {N1 - 1}, got "
                                 f"lo={lo[g]}, hi={hi[g]}")
            s = slice(lo[g], hi[g] + 1)
            if not (np.all(np.isfinite(U[g, s])) and np.all(np.isfinite(CU[:, g, s]))):
                raise ValueError(f"group {names[g]}: U or CU is not finite inside [lo, hi]")
        if not np.all(np.isfinite(K)) or np.any(np.isnan(B) | (B == -np.inf)):
            raise ValueError(f"K must be finite and B a number or +inf, got K={K}, B={B}")
        radix = (hi - lo + 1).astype(np.int64)
        order, bags = decompose(edges, radix.tolist())
        widest = max(bags, key=lambda b: math.prod(int(radix[u]) for u in b))
        size = math.prod(int(radix[u]) for u in widest)
        if size > max_states:
            raise TooWideError(
                f"the graph of groups is too wide for the exact DP: its widest bag "
                f"{[names[u] for u in widest]} has {size:,} width combinations (limit "
                f"{max_states:,}); pass heuristic='lagrangian' for a bounded approximation")
        self.order = np.array(order, np.int64)  # external index of vertex t
        pos = np.empty(G, np.int64)
        pos[self.order] = np.arange(G)
        self.names = names
        self.U = np.ascontiguousarray(U[self.order])
        self.CU = np.ascontiguousarray(CU[:, self.order])
        # Orient every edge earlier -> later; its tables [w_earlier, w_later].
        ea, eb = pos[edges[:, 0]], pos[edges[:, 1]]
        flip = ea > eb
        EP = P.copy()
        ECP = CP.copy()
        EP[flip] = np.swapaxes(P[flip], 1, 2)
        ECP[:, flip] = np.swapaxes(CP[:, flip], 2, 3)
        lo_e, hi_e = np.minimum(ea, eb), np.maximum(ea, eb)
        for e in range(E):
            s = slice(lo[self.order[lo_e[e]]], hi[self.order[lo_e[e]]] + 1)
            t = slice(lo[self.order[hi_e[e]]], hi[self.order[hi_e[e]]] + 1)
            if not (np.all(np.isfinite(EP[e, s, t])) and np.all(np.isfinite(ECP[:, e, s, t]))):
                a, b = edges[e]
                raise ValueError(f"edge ({names[a]}, {names[b]}): P or CP is not finite")
        self.EP, self.ECP = np.ascontiguousarray(EP), np.ascontiguousarray(ECP)
        srt = np.lexsort((lo_e, hi_e))
        self.be_u = np.ascontiguousarray(lo_e[srt])
        self.be_e = np.ascontiguousarray(srt.astype(np.int64))
        self.be_off = np.searchsorted(hi_e[srt], np.arange(G + 1)).astype(np.int64)
        later = [set() for _ in range(G)]
        for a, b in zip(lo_e, hi_e, strict=True):
            later[a].add(int(b))
        fr: list[int] = []
        fo = [0, 0]
        for t in range(G):
            fr += [u for u in range(t + 1) if any(v > t for v in later[u])]
            fo.append(len(fr))
        self.fr = np.array(fr, np.int64)
        self.fo = np.array(fo, np.int64)
        self.K, self.B = K, B
        self.lo = np.ascontiguousarray(lo.astype(np.int64)[self.order])
        self.hi = np.ascontiguousarray(hi.astype(np.int64)[self.order])
        self.G, self.R = G, R
        self.bag_names = [[names[u] for u in b] for b in bags]
        scale = 1.0 + sum(np.abs(self.U[g, self.lo[g]: self.hi[g] + 1]).max() for g in range(G))
        scale += float(np.abs(EP).max()) * E if E else 0.0
        self.value_scale = float(scale)
        self.tol = FEAS_RTOL * np.maximum(1.0, np.abs(B))
        self.tol[~np.isfinite(self.tol)] = np.inf

    @property
    def graph_tables(self):
        return self.U, self.CU, self.EP, self.ECP, self.be_off, self.be_u, self.be_e

    def to_external(self, w: np.ndarray) -> np.ndarray:
        out = np.empty(self.G, np.int64)
        out[self.order] = w
        return out

    def lagrangian(self, lam: np.ndarray, w: np.ndarray, c: np.ndarray) -> float:
        return _g_lagrangian(*self.graph_tables, self.fr, self.fo, self.K, lam, self.lo,
                             self.hi, w, c)

    def evaluate(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        c = np.empty(self.R)
        v = _g_evaluate(*self.graph_tables, self.K, np.asarray(w, dtype=np.int64), c)
        return float(v), c

    def greedy(self, w: np.ndarray) -> None:
        _g_greedy_fill(*self.graph_tables, self.K, self.B, self.tol, self.hi, w)

    def min_tail(self, lo, hi):
        soff = _state_offsets(self.fr, self.fo, lo, hi)
        return _g_min_tail(*self.graph_tables, self.fr, self.fo, soff, lo, hi)

    def dp(self, lo, hi, lams, incumbent, LB=None):
        if LB is None:
            LB = self.min_tail(lo, hi)
        soff = _state_offsets(self.fr, self.fo, lo, hi)
        H = _g_bound_tables(*self.graph_tables, self.fr, self.fo, soff, lams, lo, hi)
        vtol = _VAL_RTOL * self.value_scale
        return _g_dp(*self.graph_tables, self.fr, self.fo, self.K, self.B, lo, hi, self.tol,
                     2.0 * self.tol, LB, lams, H, float(incumbent), vtol)


def _start(prob: _GraphProblem) -> tuple[_Incumbent, np.ndarray, np.ndarray]:
    LB = prob.min_tail(prob.lo, prob.hi)
    min_cost = prob.K + LB[:, 0]
    if np.any(min_cost > prob.B + prob.tol):
        raise ValueError(
            f"infeasible: the minimum achievable cost per resource is {min_cost.tolist()}, "
            f"above the budget {prob.B.tolist()}")
    inc = _Incumbent(prob)
    seeds = [prob.lo, prob.hi]
    if np.all(prob.evaluate(prob.lo)[1] <= prob.B + prob.tol):
        w = prob.lo.copy()
        prob.greedy(w)
        seeds.append(w)
    lam = _dual_search(prob, inc, seeds)
    if inc.widths is not None:
        w = inc.widths.copy()
        prob.greedy(w)
        inc.offer(w, *prob.evaluate(w))
    return inc, lam, LB


def _window(prob: _GraphProblem, inc: _Incumbent, lams: np.ndarray) -> None:
    for _ in range(8):
        w = inc.widths
        lo = np.maximum(prob.lo, w - _WINDOW)
        hi = np.minimum(prob.hi, w + _WINDOW)
        found, v, c, _ = prob.dp(lo, hi, lams, inc.value)
        if found[0] >= 0:
            inc.offer(found, v, c)
        if np.array_equal(inc.widths, w):
            return


def solve_graph(U: ArrayLike, P: ArrayLike | None, CU: ArrayLike, CP: ArrayLike | None,
                K: ArrayLike, B: ArrayLike, lo: ArrayLike, hi: ArrayLike, edges: ArrayLike, *,
                names: Sequence[str] | None = None, max_states: int = MAX_STATES,
                ) -> tuple[np.ndarray, float, np.ndarray]:
    """Exact optimum of the graph knapsack over prefix widths.

    Args:
        U: ``[G, Nmax+1]`` value of keeping the first ``w`` units of group ``g``.
        P: ``[E, Nmax+1, Nmax+1]`` value of edge ``e`` at ``(w_a, w_b)``, or ``None``.
        CU: ``[R, G, Nmax+1]`` per-group costs (2-D means ``R = 1``).
        CP: ``[R, E, Nmax+1, Nmax+1]`` per-edge costs (3-D means ``R = 1``), or ``None``.
        K: ``[R]`` fixed costs. B: ``[R]`` budgets (``inf``: unconstrained).
        lo, hi: ``[G]`` width bounds, ``1 <= lo <= hi <= Nmax``.
        edges: ``[E, 2]`` the groups ``(a_e, b_e)`` each edge joins.
        names: group names for error messages.
        max_states: the largest bag (in width combinations) the exact DP accepts.

    Returns:
        ``(widths, value, costs)`` as :func:`evaluate_graph` computes them.

    Raises:
        TooWideError: (a ValueError) naming the groups of the widest bag.
        ValueError: on malformed tables or infeasible budgets.

    Example: a triangle of three groups, every pair joined by a layer of ``w_a * w_b`` MACs.
        >>> import numpy as np
        >>> U = np.array([[0, 5, 8, 9], [0, 4, 7, 9], [0, 6, 7, 8]], float)
        >>> CP = np.stack([np.outer(np.arange(4), np.arange(4))] * 3)[None]
        >>> w, v, c = solve_graph(U, None, np.zeros((1, 3, 4)), CP, 0.0, 12.0, 1, 3,
        ...                       [[0, 1], [1, 2], [0, 2]])
        >>> w.tolist(), v, c.tolist()
        ([2, 3, 1], 23.0, [11.0])

    References:
        Corti et al., REDS (arXiv:2311.13349), Sec. 3.3 (the knapsack this generalises).
    """
    prob = _GraphProblem(U, P, CU, CP, K, B, lo, hi, edges, names=names, max_states=max_states)
    inc, lam, LB = _start(prob)
    lams = _prepare_bounds(prob, lam)
    if inc.widths is not None:
        _window(prob, inc, lams)
    widths, value, costs, _ = prob.dp(prob.lo, prob.hi, lams, inc.value, LB)
    if widths[0] < 0:
        raise ValueError(f"infeasible: no widths within the bounds meet every budget "
                         f"{prob.B.tolist()} at once")
    return prob.to_external(widths), float(value), costs


def lagrangian_graph(U: ArrayLike, P: ArrayLike | None, CU: ArrayLike, CP: ArrayLike | None,
                     K: ArrayLike, B: ArrayLike, lo: ArrayLike, hi: ArrayLike,
                     edges: ArrayLike, *, names: Sequence[str] | None = None,
                     ) -> tuple[np.ndarray, float, np.ndarray, float]:
    """Lagrangian heuristic: a feasible assignment and an upper bound on the optimum.

    The multiplier search, greedy fill and box DP of :func:`solve_graph`, without the full DP;
    the bound is the Lagrangian dual ``min_lam max_w V(w) - lam . (C(w) - B)`` at the multipliers
    found. Arguments as in :func:`solve_graph` (no width limit: only the bags of the box DP are
    enumerated, at most ``9 ** bag size``).

    Returns:
        ``(widths, value, costs, bound)``; ``bound - value`` is the optimality gap.

    Example:
        >>> import numpy as np
        >>> U = np.array([[0, 5, 8, 9], [0, 4, 7, 9]], float)
        >>> CP = np.outer(np.arange(4), np.arange(4))[None, None]
        >>> w, v, c, bound = lagrangian_graph(U, None, np.zeros((1, 2, 4)), CP, 0.0, 4.0, 1, 3,
        ...                                   [[0, 1]])
        >>> v, v <= bound
        (15.0, True)

    References:
        Fisher, "The Lagrangian relaxation method for solving integer programming problems"
        (1981); Corti et al., REDS (arXiv:2311.13349).
    """
    prob = _GraphProblem(U, P, CU, CP, K, B, lo, hi, edges, names=names, max_states=np.inf)
    inc, lam, _ = _start(prob)
    if inc.widths is None:
        raise ValueError("the Lagrangian search found no assignment within the budget")
    _window(prob, inc, _prepare_bounds(prob, lam))
    w = np.empty(prob.G, np.int64)
    c = np.empty(prob.R)
    v = prob.lagrangian(lam, w, c)
    shift = np.where(np.isfinite(prob.B), prob.B, 0.0)
    bound = float(v - lam @ (c - shift))
    return prob.to_external(inc.widths), float(inc.value), inc.costs, max(bound, inc.value)


def evaluate_graph(U: ArrayLike, P: ArrayLike | None, CU: ArrayLike, CP: ArrayLike | None,
                   K: ArrayLike, widths: ArrayLike, edges: ArrayLike) -> tuple[float, np.ndarray]:
    """Value and cost vector of one width assignment, summed in the solver's order.

    Example:
        >>> import numpy as np
        >>> U = np.array([[0, 5, 8, 9], [0, 4, 7, 9]], float)
        >>> CP = np.outer(np.arange(4), np.arange(4))[None, None]
        >>> evaluate_graph(U, None, np.zeros((1, 2, 4)), CP, 0.0, [3, 1], [[0, 1]])
        (13.0, array([3.]))

    References:
        Corti et al., REDS (arXiv:2311.13349).
    """
    w = np.asarray(widths, dtype=np.int64)
    prob = _GraphProblem(U, P, CU, CP, K, np.inf, w, w, edges, max_states=np.inf)
    return prob.evaluate(w[prob.order])


def brute_force_graph(U: ArrayLike, P: ArrayLike | None, CU: ArrayLike, CP: ArrayLike | None,
                      K: ArrayLike, B: ArrayLike, lo: ArrayLike, hi: ArrayLike,
                      edges: ArrayLike) -> tuple[np.ndarray, float, np.ndarray]:
    """Reference solver by enumeration in plain Python, for tests on tiny graphs.

    Highest value, then lexicographically lowest costs (the rule of :func:`solve_graph`);
    sums in group order, so values may differ from the solver's in the last bits.

    Example:
        >>> import numpy as np
        >>> U = np.array([[0, 5, 8, 9], [0, 4, 7, 9]], float)
        >>> CP = np.outer(np.arange(4), np.arange(4))[None, None]
        >>> brute_force_graph(U, None, np.zeros((1, 2, 4)), CP, 0.0, 4.0, 1, 3, [[0, 1]])[0]
        array([2, 2])

    References:
        Corti et al., REDS (arXiv:2311.13349).
    """
    U = np.asarray(U, np.float64)
    G, N1 = U.shape
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    E = edges.shape[0]
    CU = np.asarray(CU, np.float64)
    CU = CU[None] if CU.ndim == 2 else CU
    R = CU.shape[0]
    P = np.zeros((E, N1, N1)) if P is None else np.asarray(P, np.float64)
    CP = np.zeros((R, E, N1, N1)) if CP is None else np.asarray(CP, np.float64)
    CP = CP[None] if CP.ndim == 3 else CP
    K = np.broadcast_to(np.asarray(K, np.float64), (R,))
    B = np.broadcast_to(np.asarray(B, np.float64), (R,))
    tol = FEAS_RTOL * np.maximum(1.0, np.abs(B))
    lo = np.broadcast_to(np.asarray(lo), (G,))
    hi = np.broadcast_to(np.asarray(hi), (G,))
    best = None
    for w in itertools.product(*[range(int(a), int(b) + 1) for a, b in zip(lo, hi, strict=True)]):
        v = sum(U[g, w[g]] for g in range(G)) + sum(P[e, w[a], w[b]]
                                                   for e, (a, b) in enumerate(edges))
        c = [K[r] + sum(CU[r, g, w[g]] for g in range(G))
             + sum(CP[r, e, w[a], w[b]] for e, (a, b) in enumerate(edges)) for r in range(R)]
        if any(c[r] > B[r] + tol[r] for r in range(R)):
            continue
        key = (-v, tuple(c))
        if best is None or key < best[0]:
            best = (key, w, v, c)
    if best is None:
        raise ValueError(f"infeasible: no widths meet the budget {B.tolist()}")
    _, w, v, c = best
    return np.array(w, np.int64), float(v), np.array(c)
