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
def _fits(c, B, tol):
    for r in range(c.shape[0]):
        if c[r] > B[r] + tol[r]:
            return False
    return True


@numba.njit(cache=True)
def _greedy_fill(U, P, CU, CP, K, B, tol, hi, w):
    """Grow ``w`` (feasible) one unit at a time, best value gain per budget share; returns V(w)."""
    G = U.shape[0]
    R = K.shape[0]
    c = np.empty(R)
    c2 = np.empty(R)
    v = _evaluate(U, P, CU, CP, K, w, c)
    # Costs are compared as shares of the budget left above the fixed part, so that a parameter
    # count and a MAC count weigh alike; an unbounded resource does not count.
    scale = np.zeros(R)
    for r in range(R):
        if np.isfinite(B[r]):
            scale[r] = max(abs(B[r] - K[r]), 1e-300)
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
            dc = 0.0
            for r in range(R):
                if scale[r] > 0.0:
                    dc = max(dc, (c2[r] - c[r]) / scale[r])
            ratio = (v2 - v) / dc if dc > 0.0 else np.inf
            if ratio > best_ratio:
                best_ratio = ratio
                best_g = g
        if best_g < 0:
            return v
        w[best_g] += 1
        v = _evaluate(U, P, CU, CP, K, w, c)


@numba.njit(cache=True)
def _grow(a, n):
    out = np.empty((max(2 * a.shape[0], n),) + a.shape[1:], a.dtype)
    out[: a.shape[0]] = a
    return out


@numba.njit(cache=True)
def _grow_labels(lw, lpar, lv, lkey, lc, n):
    """The label arrays (width, parent, value, key, costs), grown to hold at least ``n``."""
    return _grow(lw, n), _grow(lpar, n), _grow(lv, n), _grow(lkey, n), _grow(lc, n)


@numba.njit(cache=True)
def _pareto(cc, cv, m):
    """Indices of the non-dominated rows of ``(cc[:m], cv[:m])`` (min costs, max value).

    Rows are visited in lexicographic (costs ascending, value descending, original index) order,
    so a dominating row is always met first and of exact duplicates the earliest row survives.
    """
    R = cc.shape[1]
    idx = np.argsort(-cv[:m], kind="mergesort")
    col = np.empty(m)
    for r in range(R - 1, -1, -1):
        for i in range(m):
            col[i] = cc[idx[i], r]
        idx = idx[np.argsort(col, kind="mergesort")]
    keep = np.empty(m, np.int64)
    nk = 0
    if R == 1:
        best = -np.inf
        for i in range(m):
            j = idx[i]
            if cv[j] > best:
                best = cv[j]
                keep[nk] = j
                nk += 1
    elif R == 2:
        # Staircase over (second cost, value) of the rows kept so far: second cost ascending,
        # value strictly ascending. A row is dominated iff the stair step at its second cost
        # already holds at least its value.
        sc = np.empty(m)
        sv = np.empty(m)
        ns = 0
        for i in range(m):
            j = idx[i]
            c1 = cc[j, 1]
            v = cv[j]
            lo_, hi_ = 0, ns
            while lo_ < hi_:
                mid = (lo_ + hi_) // 2
                if sc[mid] <= c1:
                    lo_ = mid + 1
                else:
                    hi_ = mid
            pos = lo_  # first step with a larger second cost
            if pos > 0 and sv[pos - 1] >= v:
                continue
            keep[nk] = j
            nk += 1
            start = pos - 1 if (pos > 0 and sc[pos - 1] == c1) else pos
            end = pos
            while end < ns and sv[end] <= v:
                end += 1
            # Replace steps [start, end) with the new one.
            shift = (end - start) - 1
            if shift > 0:
                for t in range(end, ns):
                    sc[t - shift] = sc[t]
                    sv[t - shift] = sv[t]
            elif shift < 0:
                for t in range(ns - 1, end - 1, -1):
                    sc[t + 1] = sc[t]
                    sv[t + 1] = sv[t]
            ns -= shift
            sc[start] = c1
            sv[start] = v
    else:
        for i in range(m):
            j = idx[i]
            dominated = False
            for t in range(nk):
                q = keep[t]
                if cv[q] < cv[j]:
                    continue
                ok = True
                for r in range(R):
                    if cc[q, r] > cc[j, r]:
                        ok = False
                        break
                if ok:
                    dominated = True
                    break
            if not dominated:
                keep[nk] = j
                nk += 1
    return keep[:nk]


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
    shift_c = np.empty(R)
    for g in range(G - 1):
        for b in range(lo[g + 1], hi[g + 1] + 1):
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
                    alive = True
                    for r in range(R):
                        c[r] = lc[i, r] + shift_c[r]
                        if c[r] + LB[r, g + 1, b] > B[r] + slack[r]:
                            alive = False
                    if not alive:
                        continue
                    v = lv[i] + shift_v
                    if use_bound:
                        for k in range(1, nk):
                            ub = v + H[k, g + 1, b]
                            for r in range(R):
                                if lams[k, r] != 0.0:
                                    ub += lams[k, r] * (B[r] - c[r])
                            if ub < floor:
                                alive = False
                                break
                    if not alive:
                        continue
                    if m == ccap:
                        cc, cv, cpar = _grow(cc, m + 1), _grow(cv, m + 1), _grow(cpar, m + 1)
                        ccap = cv.shape[0]
                    for r in range(R):
                        cc[m, r] = c[r]
                    cv[m] = v
                    cpar[m] = i
                    m += 1
            start[g + 1, b] = n
            if m == 0:
                continue
            kept = _pareto(cc, cv, m)
            nkept = kept.shape[0]
            keys = np.empty(nkept)
            for t in range(nkept):
                j = kept[t]
                key = cv[j]
                for r in range(R):
                    if lam0[r] != 0.0:
                        key -= lam0[r] * cc[j, r]
                keys[t] = key
            order = np.argsort(-keys, kind="mergesort")
            if n + nkept > cap:
                lw, lpar, lv, lkey, lc = _grow_labels(lw, lpar, lv, lkey, lc, n + nkept)
                cap = lw.shape[0]
            for t in range(nkept):
                j = kept[order[t]]
                lw[n] = b
                lpar[n] = cpar[j]
                lv[n] = cv[j]
                lkey[n] = keys[order[t]]
                for r in range(R):
                    lc[n, r] = cc[j, r]
                n += 1
            count[g + 1, b] = nkept

    # Best terminal label: highest value, then lexicographically lowest costs, then the smaller
    # last width (states are stored in increasing width).
    best = -1
    gl = G - 1
    for b in range(lo[gl], hi[gl] + 1):
        for i in range(start[gl, b], start[gl, b] + count[gl, b]):
            if not _fits(lc[i], B, tol):
                continue
            if best < 0 or lv[i] > lv[best]:
                best = i
                continue
            if lv[i] < lv[best]:
                continue
            for r in range(R):
                if lc[i, r] < lc[best, r]:
                    best = i
                    break
                if lc[i, r] > lc[best, r]:
                    break
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

