"""Numba kernels of the exact chain knapsack: evaluation, bound passes, greedy fill, Pareto DP.

The method (labels, Pareto dominance, budget and Lagrangian pruning, tie-breaking) is described in
:mod:`subnets.kernels.knapsack`, which validates the tables and drives these kernels. Every kernel
takes contiguous float64 tables ``U, P, CU, CP, K`` (and int64 ``lo``, ``hi``) as that module's
``_Problem`` prepares them.

References:
    Corti et al., "REDS: Resource-Efficient Deep Subnetworks for Dynamic Resource Constraints",
    arXiv:2311.13349.
"""

from __future__ import annotations

import numba
import numpy as np

from ._labels import (
    _better,
    _budget_scale,
    _commit,
    _fits,
    _gain_ratio,
    _grow,
    _grow_labels,
    _survives,
)


@numba.njit(cache=True)
def _evaluate(U, P, CU, CP, K, w, c):
    """Value of ``w``; writes its costs into ``c``. Chain order, as the DP accumulates."""
    G = U.shape[0]
    R = K.shape[0]
    v = U[0, w[0]]
    for r in range(R):
        c[r] = K[r] + CU[r, 0, w[0]]
    for g in range(G - 1):
        a = w[g]
        b = w[g + 1]
        v = v + (P[g, a, b] + U[g + 1, b])
        for r in range(R):
            c[r] = c[r] + (CP[r, g, a, b] + CU[r, g + 1, b])
    return v


@numba.njit(cache=True)
def _min_remaining_cost(CU, CP, lo, hi):
    """``LB[r, g, w]``: least cost resource ``r`` adds after group ``g`` when ``w_g = w``."""
    R, G, N1 = CU.shape
    LB = np.full((R, G, N1), np.inf)
    for r in range(R):
        for w in range(lo[G - 1], hi[G - 1] + 1):
            LB[r, G - 1, w] = 0.0
        for g in range(G - 2, -1, -1):
            for a in range(lo[g], hi[g] + 1):
                best = np.inf
                for b in range(lo[g + 1], hi[g + 1] + 1):
                    s = CP[r, g, a, b] + CU[r, g + 1, b] + LB[r, g + 1, b]
                    if s < best:
                        best = s
                LB[r, g, a] = best
    return LB


@numba.njit(cache=True)
def _lagrangian_tail(U, P, CU, CP, has_p, lam, lo, hi, H, nxt):
    """Backward pass: ``H[g, w]`` = best remaining ``value - lam . cost`` after group ``g``."""
    G, N1 = U.shape
    R = lam.shape[0]
    row = np.empty(N1)
    tmp = np.empty(N1)
    for w in range(lo[G - 1], hi[G - 1] + 1):
        H[G - 1, w] = 0.0
    for g in range(G - 2, -1, -1):
        b0 = lo[g + 1]
        b1 = hi[g + 1] + 1
        for b in range(b0, b1):
            t = U[g + 1, b] + H[g + 1, b]
            for r in range(R):
                if lam[r] != 0.0:
                    t -= lam[r] * CU[r, g + 1, b]
            row[b] = t
        for a in range(lo[g], hi[g] + 1):
            # Separate simple loops vectorise; this pass dominates the set-up time.
            for b in range(b0, b1):
                tmp[b] = row[b]
            if has_p[g]:
                for b in range(b0, b1):
                    tmp[b] += P[g, a, b]
            for r in range(R):
                if lam[r] != 0.0:
                    x = lam[r]
                    for b in range(b0, b1):
                        tmp[b] -= x * CP[r, g, a, b]
            best = -np.inf
            arg = -1
            for b in range(b0, b1):
                if tmp[b] > best:
                    best = tmp[b]
                    arg = b
            H[g, a] = best
            nxt[g, a] = arg


@numba.njit(cache=True)
def _lagrangian_solution(U, P, CU, CP, K, has_p, lam, lo, hi, w, c):
    """Maximise ``V(w) - lam . C(w)`` over the box; fills ``w``, ``c``; returns ``V(w)``."""
    G, N1 = U.shape
    R = K.shape[0]
    H = np.empty((G, N1))
    nxt = np.zeros((G, N1), np.int64)
    _lagrangian_tail(U, P, CU, CP, has_p, lam, lo, hi, H, nxt)
    best = -np.inf
    for a in range(lo[0], hi[0] + 1):
        s = U[0, a] + H[0, a]
        for r in range(R):
            if lam[r] != 0.0:
                s -= lam[r] * (K[r] + CU[r, 0, a])
        if s > best:
            best = s
            w[0] = a
    for g in range(G - 1):
        w[g + 1] = nxt[g, w[g]]
    return _evaluate(U, P, CU, CP, K, w, c)


@numba.njit(cache=True)
def _bound_tables(U, P, CU, CP, has_p, lams, lo, hi):
    """``H[k]`` of :func:`_lagrangian_tail` for each multiplier vector ``lams[k]``."""
    G, N1 = U.shape
    nk = lams.shape[0]
    H = np.full((nk, G, N1), -np.inf)
    nxt = np.zeros((G, N1), np.int64)
    for k in range(nk):
        _lagrangian_tail(U, P, CU, CP, has_p, lams[k], lo, hi, H[k], nxt)
    return H


@numba.njit(cache=True)
def _greedy_fill(U, P, CU, CP, K, B, tol, hi, w):
    """Grow ``w`` (feasible) one unit at a time, best value gain per budget share; returns V(w)."""
    G = U.shape[0]
    R = K.shape[0]
    c = np.empty(R)
    c2 = np.empty(R)
    v = _evaluate(U, P, CU, CP, K, w, c)
    scale = _budget_scale(B, K)
    while True:
        best_ratio = -1.0
        best_g = -1
        for g in range(G):
            if w[g] >= hi[g]:
                continue
            w[g] += 1
            v2 = _evaluate(U, P, CU, CP, K, w, c2)
            w[g] -= 1
            if v2 <= v or not _fits(c2, B, tol):
                continue
            ratio = _gain_ratio(v, v2, c, c2, scale)
            if ratio > best_ratio:
                best_ratio = ratio
                best_g = g
        if best_g < 0:
            return v
        w[best_g] += 1
        v = _evaluate(U, P, CU, CP, K, w, c)


@numba.njit(cache=True)
def _dp(U, P, CU, CP, K, B, lo, hi, tol, slack, LB, lams, H, inc, vtol):
    """Pareto-frontier DP along the chain; returns (widths or -1s, value, costs, label count)."""
    G, N1 = U.shape
    R = K.shape[0]
    nk = lams.shape[0]
    use_bound = np.isfinite(inc)
    floor = inc - vtol
    lam0 = lams[0]

    cap = 1024
    lw = np.empty(cap, np.int64)
    lpar = np.empty(cap, np.int64)
    lv = np.empty(cap)
    lkey = np.empty(cap)
    lc = np.empty((cap, R))
    n = 0
    start = np.zeros((G, N1), np.int64)
    count = np.zeros((G, N1), np.int64)

    # Group 0: one label per width.
    c = np.empty(R)
    for a in range(lo[0], hi[0] + 1):
        v = U[0, a]
        alive = True
        for r in range(R):
            c[r] = K[r] + CU[r, 0, a]
            if c[r] + LB[r, 0, a] > B[r] + slack[r]:
                alive = False
        if alive and use_bound:
            for k in range(nk):
                ub = v + H[k, 0, a]
                for r in range(R):
                    if lams[k, r] != 0.0:
                        ub += lams[k, r] * (B[r] - c[r])
                if ub < floor:
                    alive = False
                    break
        start[0, a] = n
        if not alive:
            continue
        if n == cap:
            lw, lpar, lv, lkey, lc = _grow_labels(lw, lpar, lv, lkey, lc, n + 1)
            cap = lw.shape[0]
        key = v
        for r in range(R):
            if lam0[r] != 0.0:
                key -= lam0[r] * c[r]
            lc[n, r] = c[r]
        lw[n] = a
        lpar[n] = -1
        lv[n] = v
        lkey[n] = key
        count[0, a] = 1
        n += 1

    ccap = 1024
    cc = np.empty((ccap, R))
    cv = np.empty(ccap)
    cpar = np.empty(ccap, np.int64)
    cx = np.empty(ccap, np.int64)
    shift_c = np.empty(R)
    for g in range(G - 1):
        for b in range(lo[g + 1], hi[g + 1] + 1):
            lb = LB[:, g + 1, b]
            hcol = H[:, g + 1, b]
            m = 0
            for a in range(lo[g], hi[g] + 1):
                na = count[g, a]
                if na == 0:
                    continue
                shift_v = P[g, a, b] + U[g + 1, b]
                const0 = shift_v + H[0, g + 1, b]
                for r in range(R):
                    shift_c[r] = CP[r, g, a, b] + CU[r, g + 1, b]
                    if lam0[r] != 0.0:
                        const0 += lam0[r] * (B[r] - shift_c[r])
                s0 = start[g, a]
                for i in range(s0, s0 + na):
                    # Labels are sorted by key, and the lam* bound is key + const0: stop here.
                    if use_bound and lkey[i] + const0 < floor:
                        break
                    v = lv[i] + shift_v
                    if not _survives(lc[i], shift_c, lb, B, slack, v, hcol, lams, floor,
                                     use_bound, c):
                        continue
                    if m == ccap:
                        cc, cv = _grow(cc, m + 1), _grow(cv, m + 1)
                        cpar, cx = _grow(cpar, m + 1), _grow(cx, m + 1)
                        ccap = cv.shape[0]
                    for r in range(R):
                        cc[m, r] = c[r]
                    cv[m] = v
                    cpar[m] = i
                    cx[m] = b
                    m += 1
            start[g + 1, b] = n
            if m == 0:
                continue
            lw, lpar, lv, lkey, lc, n, nkept = _commit(cc, cv, cpar, cx, m, lam0, lw, lpar, lv,
                                                       lkey, lc, n)
            cap = lw.shape[0]
            count[g + 1, b] = nkept

    # Best terminal label: highest value, then lexicographically lowest costs, then the smaller
    # last width (states are stored in increasing width).
    best = -1
    gl = G - 1
    for b in range(lo[gl], hi[gl] + 1):
        for i in range(start[gl, b], start[gl, b] + count[gl, b]):
            best = _better(i, best, lv, lc, B, tol)
    widths = np.full(G, -1, np.int64)
    costs = np.full(R, np.nan)
    if best < 0:
        return widths, -np.inf, costs, n
    i = best
    for g in range(G - 1, -1, -1):
        widths[g] = lw[i]
        i = lpar[i]
    for r in range(R):
        costs[r] = lc[best, r]
    return widths, lv[best], costs, n

