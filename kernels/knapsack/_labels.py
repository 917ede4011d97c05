"""Numba label kernels shared by the chain and graph knapsack DPs.

A *label* is one partial assignment: the width it chose last, its parent label, its value, its
sort key (value minus the first Lagrangian multipliers times its costs) and its costs. Both DPs
extend labels (:func:`_survives`: budget and Lagrangian-bound pruning), keep the Pareto front of
each state's candidates (:func:`_pareto`), append them in key order (:func:`_commit`) and pick the
best terminal label (:func:`_better`); the greedy fill of both weighs gains by budget share
(:func:`_budget_scale`, :func:`_gain_ratio`).

References:
    Corti et al., "REDS: Resource-Efficient Deep Subnetworks for Dynamic Resource Constraints",
    arXiv:2311.13349.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _fits(c, B, tol):
    for r in range(c.shape[0]):
        if c[r] > B[r] + tol[r]:
            return False
    return True


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


@numba.njit(cache=True, inline="always")
def _survives(lci, shift, lb, B, slack, v, hcol, lams, floor, use_bound, c):
    """Extend a label of costs ``lci`` by ``shift`` into ``c``; False if it can be pruned.

    Pruned when a cost plus its lower bound to go ``lb`` exceeds the budget (with ``slack``), or
    when a Lagrangian upper bound ``v + hcol[k] + lams[k] . (B - c)`` (k >= 1; k = 0 is checked by
    the caller through the sorted keys) falls below ``floor``.
    """
    R = c.shape[0]
    alive = True
    for r in range(R):
        c[r] = lci[r] + shift[r]
        if c[r] + lb[r] > B[r] + slack[r]:
            alive = False
    if not alive:
        return False
    if use_bound:
        for k in range(1, lams.shape[0]):
            ub = v + hcol[k]
            for r in range(R):
                if lams[k, r] != 0.0:
                    ub += lams[k, r] * (B[r] - c[r])
            if ub < floor:
                return False
    return True


@numba.njit(cache=True)
def _commit(cc, cv, cpar, cx, m, lam0, lx, lpar, lv, lkey, lc, n):
    """Append the Pareto front of candidates ``[:m]`` as labels, by key descending.

    Returns the (possibly grown) label arrays, the new label count and how many were kept.
    """
    R = cc.shape[1]
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
    if n + nkept > lx.shape[0]:
        lx, lpar, lv, lkey, lc = _grow_labels(lx, lpar, lv, lkey, lc, n + nkept)
    for t in range(nkept):
        j = kept[order[t]]
        lx[n] = cx[j]
        lpar[n] = cpar[j]
        lv[n] = cv[j]
        lkey[n] = keys[order[t]]
        for r in range(R):
            lc[n, r] = cc[j, r]
        n += 1
    return lx, lpar, lv, lkey, lc, n, nkept


@numba.njit(cache=True)
def _better(i, best, lv, lc, B, tol):
    """``i`` or ``best`` (-1: none yet): feasible, highest value, then lexicographically lowest
    costs; ties keep ``best`` (the earlier label)."""
    if not _fits(lc[i], B, tol):
        return best
    if best < 0 or lv[i] > lv[best]:
        return i
    if lv[i] < lv[best]:
        return best
    for r in range(lc.shape[1]):
        if lc[i, r] < lc[best, r]:
            return i
        if lc[i, r] > lc[best, r]:
            return best
    return best


@numba.njit(cache=True)
def _budget_scale(B, K):
    """Per-resource scale of the greedy fill: the budget left above the fixed part ``K`` (so a
    parameter count and a MAC count weigh alike); 0 for an unbounded resource (not counted)."""
    scale = np.zeros(K.shape[0])
    for r in range(K.shape[0]):
        if np.isfinite(B[r]):
            scale[r] = max(abs(B[r] - K[r]), 1e-300)
    return scale


@numba.njit(cache=True)
def _gain_ratio(v, v2, c, c2, scale):
    """Value gain per largest budget share spent going from ``(v, c)`` to ``(v2, c2)``."""
    dc = 0.0
    for r in range(c.shape[0]):
        if scale[r] > 0.0:
            dc = max(dc, (c2[r] - c[r]) / scale[r])
    return (v2 - v) / dc if dc > 0.0 else np.inf
