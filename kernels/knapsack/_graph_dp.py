"""Numba kernels of the exact graph knapsack: evaluation, bound passes, greedy fill, Pareto DP.

The method is described in :mod:`subnets.kernels.knapsack.graph`, which validates the tables,
finds the path decomposition and drives these kernels. Vertices are numbered in processing order
``0..G-1``; step ``t`` assigns vertex ``t``. The *frontier* ``F_t`` (vertices ``<= t`` with a
neighbour ``> t``) is the DP state after step ``t``; ``F_{-1}`` and ``F_{G-1}`` are empty. Frontier
``f = t + 1`` is stored as ``fr[fo[f]:fo[f + 1]]``; a state is the mixed-radix index of its widths
inside ``[lo, hi]`` (last member fastest), and the states of frontier ``f`` occupy
``soff[f]:soff[f + 1]`` of every flat per-state array. The back edges of vertex ``t`` (to earlier
vertices, all in ``F_{t-1}``) are ``be_u/be_e[be_off[t]:be_off[t + 1]]``; edge tables ``EP[e]``,
``ECP[:, e]`` are indexed ``[w_earlier, w_later]``.

References:
    Corti et al., "REDS: Resource-Efficient Deep Subnetworks for Dynamic Resource Constraints",
    arXiv:2311.13349. Bodlaender, "A partial k-arboretum of graphs with bounded treewidth" (1998).
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
    _survives,
)


@numba.njit(cache=True)
def _state_offsets(fr, fo, lo, hi):
    nf = fo.shape[0] - 1
    soff = np.zeros(nf + 1, np.int64)
    for f in range(nf):
        p = 1
        for j in range(fo[f], fo[f + 1]):
            u = fr[j]
            p *= hi[u] - lo[u] + 1
        soff[f + 1] = soff[f] + p
    return soff


@numba.njit(cache=True)
def _encode(fr, a, b, lo, hi, w):
    idx = 0
    for j in range(a, b):
        u = fr[j]
        idx = idx * (hi[u] - lo[u] + 1) + (w[u] - lo[u])
    return idx


@numba.njit(cache=True)
def _decode(fr, a, b, lo, hi, idx, w):
    for j in range(b - 1, a - 1, -1):
        u = fr[j]
        r = hi[u] - lo[u] + 1
        w[u] = lo[u] + idx % r
        idx //= r


@numba.njit(cache=True)
def _inc(U, CU, EP, ECP, be_off, be_u, be_e, t, x, w, ic):
    """Value and costs (into ``ic``) that step ``t`` adds at ``w_t = x``; one fixed order."""
    R = CU.shape[0]
    v = U[t, x]
    for r in range(R):
        ic[r] = CU[r, t, x]
    for k in range(be_off[t], be_off[t + 1]):
        e = be_e[k]
        a = w[be_u[k]]
        v += EP[e, a, x]
        for r in range(R):
            ic[r] += ECP[r, e, a, x]
    return v


@numba.njit(cache=True)
def _g_evaluate(U, CU, EP, ECP, be_off, be_u, be_e, K, w, c):
    """Value of ``w``; writes its costs into ``c``. Step order, as the DP accumulates."""
    G = U.shape[0]
    R = K.shape[0]
    ic = np.empty(R)
    v = 0.0
    for r in range(R):
        c[r] = K[r]
    for t in range(G):
        iv = _inc(U, CU, EP, ECP, be_off, be_u, be_e, t, w[t], w, ic)
        v = v + iv
        for r in range(R):
            c[r] = c[r] + ic[r]
    return v


@numba.njit(cache=True)
def _in_new(fr, qa, qb, t):
    """Whether vertex ``t`` stays in the new frontier; it is then its last member (stride 1)."""
    return qb > qa and fr[qb - 1] == t


@numba.njit(cache=True)
def _g_min_tail(U, CU, EP, ECP, be_off, be_u, be_e, fr, fo, soff, lo, hi):
    """``LB[r, s]``: least cost resource ``r`` still adds from frontier state ``s``."""
    G, N1 = U.shape
    R = CU.shape[0]
    LB = np.full((R, soff[-1]), np.inf)
    w = np.zeros(G, np.int64)
    row = np.empty(N1)
    for r in range(R):
        LB[r, soff[G]] = 0.0
    for t in range(G - 1, -1, -1):
        pa, pb, qa, qb = fo[t], fo[t + 1], fo[t + 1], fo[t + 2]
        x0, x1 = lo[t], hi[t] + 1
        keep = _in_new(fr, qa, qb, t)
        for i in range(soff[t + 1] - soff[t]):
            _decode(fr, pa, pb, lo, hi, i, w)
            w[t] = x0
            base = soff[t + 1] + _encode(fr, qa, qb, lo, hi, w)
            for r in range(R):
                for x in range(x0, x1):
                    row[x] = CU[r, t, x]
                for k in range(be_off[t], be_off[t + 1]):
                    e = be_e[k]
                    a = w[be_u[k]]
                    for x in range(x0, x1):
                        row[x] += ECP[r, e, a, x]
                best = np.inf
                if keep:
                    for x in range(x0, x1):
                        s = row[x] + LB[r, base + x - x0]
                        if s < best:
                            best = s
                else:
                    for x in range(x0, x1):
                        if row[x] < best:
                            best = row[x]
                    best += LB[r, base]
                LB[r, soff[t] + i] = best
    return LB


@numba.njit(cache=True)
def _g_tail(U, CU, EP, ECP, be_off, be_u, be_e, fr, fo, soff, lo, hi, lam, H, arg):
    """``H[s]``: best ``value - lam . cost`` still to come from state ``s``; ``arg`` its step.

    Per prior state the step's terms are rows over ``w_t`` (contiguous loops that vectorise);
    this pass dominates the run time.
    """
    G, N1 = U.shape
    R = CU.shape[0]
    w = np.zeros(G, np.int64)
    unit = np.empty(N1)
    row = np.empty(N1)
    H[soff[G]] = 0.0
    has_p = False
    for e in range(EP.shape[0]):
        for a in range(N1):
            for x in range(N1):
                if EP[e, a, x] != 0.0:
                    has_p = True
    for t in range(G - 1, -1, -1):
        pa, pb, qa, qb = fo[t], fo[t + 1], fo[t + 1], fo[t + 2]
        x0, x1 = lo[t], hi[t] + 1
        keep = _in_new(fr, qa, qb, t)
        for x in range(x0, x1):
            v = U[t, x]
            for r in range(R):
                if lam[r] != 0.0:
                    v -= lam[r] * CU[r, t, x]
            unit[x] = v
        for i in range(soff[t + 1] - soff[t]):
            _decode(fr, pa, pb, lo, hi, i, w)
            for x in range(x0, x1):
                row[x] = unit[x]
            for k in range(be_off[t], be_off[t + 1]):
                e = be_e[k]
                a = w[be_u[k]]
                if has_p:
                    for x in range(x0, x1):
                        row[x] += EP[e, a, x]
                for r in range(R):
                    if lam[r] != 0.0:
                        lr = lam[r]
                        for x in range(x0, x1):
                            row[x] -= lr * ECP[r, e, a, x]
            w[t] = x0
            base = soff[t + 1] + _encode(fr, qa, qb, lo, hi, w)
            best = -np.inf
            bx = x0
            if keep:
                for x in range(x0, x1):
                    s = row[x] + H[base + x - x0]
                    if s > best:
                        best = s
                        bx = x
            else:
                for x in range(x0, x1):
                    if row[x] > best:
                        best = row[x]
                        bx = x
                best += H[base]
            H[soff[t] + i] = best
            arg[soff[t] + i] = bx


@numba.njit(cache=True)
def _g_lagrangian(U, CU, EP, ECP, be_off, be_u, be_e, fr, fo, K, lam, lo, hi, w, c):
    """Maximise ``V(w) - lam . C(w)`` over the box; fills ``w``, ``c``; returns ``V(w)``."""
    G = U.shape[0]
    soff = _state_offsets(fr, fo, lo, hi)
    H = np.empty(soff[-1])
    arg = np.zeros(soff[-1], np.int64)
    _g_tail(U, CU, EP, ECP, be_off, be_u, be_e, fr, fo, soff, lo, hi, lam, H, arg)
    i = 0
    for t in range(G):
        w[t] = arg[soff[t] + i]
        i = _encode(fr, fo[t + 1], fo[t + 2], lo, hi, w)
    return _g_evaluate(U, CU, EP, ECP, be_off, be_u, be_e, K, w, c)


@numba.njit(cache=True)
def _g_bound_tables(U, CU, EP, ECP, be_off, be_u, be_e, fr, fo, soff, lams, lo, hi):
    nk = lams.shape[0]
    H = np.full((nk, soff[-1]), -np.inf)
    arg = np.zeros(soff[-1], np.int64)
    for k in range(nk):
        _g_tail(U, CU, EP, ECP, be_off, be_u, be_e, fr, fo, soff, lo, hi, lams[k], H[k], arg)
    return H


@numba.njit(cache=True)
def _g_greedy_fill(U, CU, EP, ECP, be_off, be_u, be_e, K, B, tol, hi, w):
    """Grow ``w`` (feasible) one unit at a time, best value gain per budget share; returns V(w)."""
    G = U.shape[0]
    R = K.shape[0]
    c = np.empty(R)
    c2 = np.empty(R)
    v = _g_evaluate(U, CU, EP, ECP, be_off, be_u, be_e, K, w, c)
    scale = _budget_scale(B, K)
    while True:
        best_ratio = -1.0
        best_g = -1
        for g in range(G):
            if w[g] >= hi[g]:
                continue
            w[g] += 1
            v2 = _g_evaluate(U, CU, EP, ECP, be_off, be_u, be_e, K, w, c2)
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
        v = _g_evaluate(U, CU, EP, ECP, be_off, be_u, be_e, K, w, c)


@numba.njit(cache=True)
def _g_dp(U, CU, EP, ECP, be_off, be_u, be_e, fr, fo, K, B, lo, hi, tol, slack, LB, lams, H,
          inc, vtol):
    """Pareto-frontier DP over the path decomposition; returns (widths or -1s, value, costs, n)."""
    G = U.shape[0]
    R = K.shape[0]
    soff = _state_offsets(fr, fo, lo, hi)
    use_bound = np.isfinite(inc)
    floor = inc - vtol
    lam0 = lams[0]
    widths = np.full(G, -1, np.int64)
    costs = np.full(R, np.nan)

    cap = 1024
    lx = np.empty(cap, np.int64)
    lpar = np.empty(cap, np.int64)
    lv = np.empty(cap)
    lkey = np.empty(cap)
    lc = np.empty((cap, R))
    start = np.zeros(soff[-1], np.int64)
    count = np.zeros(soff[-1], np.int64)
    for r in range(R):
        if K[r] + LB[r, 0] > B[r] + slack[r]:
            return widths, -np.inf, costs, 0
    key = 0.0
    for r in range(R):
        lc[0, r] = K[r]
        if lam0[r] != 0.0:
            key -= lam0[r] * K[r]
    lx[0] = -1
    lpar[0] = -1
    lv[0] = 0.0
    lkey[0] = key
    count[0] = 1
    n = 1

    ccap = 1024
    cc = np.empty((ccap, R))
    cv = np.empty(ccap)
    cpar = np.empty(ccap, np.int64)
    cx = np.empty(ccap, np.int64)
    w = np.zeros(G, np.int64)
    ic = np.empty(R)
    c = np.empty(R)
    elist = np.empty(G + 1, np.int64)
    for t in range(G):
        pa, pb, qa, qb = fo[t], fo[t + 1], fo[t + 1], fo[t + 2]
        # Vertices summed out at this step: the prior frontier and t, minus the new frontier.
        ne = 0
        for j in range(pa, pb + 1):
            u = fr[j] if j < pb else t
            kept = False
            for q in range(qa, qb):
                if fr[q] == u:
                    kept = True
            if not kept:
                elist[ne] = u
                ne += 1
        ncomb = 1
        for k in range(ne):
            ncomb *= hi[elist[k]] - lo[elist[k]] + 1
        for js in range(soff[t + 2] - soff[t + 1]):
            gj = soff[t + 1] + js
            lb = LB[:, gj]
            hcol = H[:, gj]
            _decode(fr, qa, qb, lo, hi, js, w)
            m = 0
            for comb in range(ncomb):
                rem = comb
                for k in range(ne - 1, -1, -1):
                    u = elist[k]
                    rr = hi[u] - lo[u] + 1
                    w[u] = lo[u] + rem % rr
                    rem //= rr
                gi = soff[t] + _encode(fr, pa, pb, lo, hi, w)
                na = count[gi]
                if na == 0:
                    continue
                x = w[t]
                iv = _inc(U, CU, EP, ECP, be_off, be_u, be_e, t, x, w, ic)
                const0 = iv + H[0, gj]
                for r in range(R):
                    if lam0[r] != 0.0:
                        const0 += lam0[r] * (B[r] - ic[r])
                s0 = start[gi]
                for i in range(s0, s0 + na):
                    # Labels are sorted by key, and the lam* bound is key + const0: stop here.
                    if use_bound and lkey[i] + const0 < floor:
                        break
                    v = lv[i] + iv
                    if not _survives(lc[i], ic, lb, B, slack, v, hcol, lams, floor, use_bound, c):
                        continue
                    if m == ccap:
                        cc, cv = _grow(cc, m + 1), _grow(cv, m + 1)
                        cpar, cx = _grow(cpar, m + 1), _grow(cx, m + 1)
                        ccap = cv.shape[0]
                    for r in range(R):
                        cc[m, r] = c[r]
                    cv[m] = v
                    cpar[m] = i
                    cx[m] = x
                    m += 1
            start[gj] = n
            if m == 0:
                continue
            lx, lpar, lv, lkey, lc, n, nkept = _commit(cc, cv, cpar, cx, m, lam0, lx, lpar, lv,
                                                       lkey, lc, n)
            count[gj] = nkept

    # The last frontier is empty: one state. Highest value, then lexicographically lowest costs.
    best = -1
    gl = soff[G]
    for i in range(start[gl], start[gl] + count[gl]):
        best = _better(i, best, lv, lc, B, tol)
    if best < 0:
        return widths, -np.inf, costs, n
    i = best
    for t in range(G - 1, -1, -1):
        widths[t] = lx[i]
        i = lpar[i]
    for r in range(R):
        costs[r] = lc[best, r]
    return widths, lv[best], costs, n
