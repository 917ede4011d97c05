"""The one score-to-mask step of IMP, pruning at init and Reconvene, with a collapse guard.

A criterion gives every prunable weight a score (higher = keep); :func:`keep_masks` keeps
exactly ``k`` weights, ranked over all layers (``scope="global"``) or within each layer. A
global ranking can empty a layer: at init a fan-in-scaled layer's weights are all smaller
than the others', so magnitude PaI at 5% density leaves dnn-s's first hidden layer one unit
(issue 13). The :class:`Floor` guard first gives every layer its best-scored weights up to

    max(min_units * weights per output unit, ceil(min_ratio * density * layer size)),

then fills the remaining budget from the global ranking, so the total count stays exact. It
never revives a weight scored ``-inf`` (already pruned). :func:`collapse_report` names layers
pruned past a threshold; :func:`keep_masks` warns with :class:`CollapseWarning` for each.

Example:
    >>> import numpy as np
    >>> s = {("a",): np.arange(1., 101.).reshape(10, 10), ("b",): 100 + np.arange(100.)}
    >>> m = keep_masks(s, 20, floor=None)
    >>> int(m[("a",)].sum())  # every kept weight is b's: layer a collapses
    0
    >>> m = keep_masks(s, 20, floor=Floor(min_units=1))
    >>> int(m[("a",)].sum()), int(m[("a",)].sum() + m[("b",)].sum())
    (10, 20)

References:
    Tanaka et al., SynFlow (NeurIPS 2020), Sec. 3 (layer collapse); Frankle et al., OpenLTH
    (open_lth ``sparse_global`` keeps per-layer counts); Lee et al., jaxpruner
    (arXiv:2304.14082).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from subnets.graph import Path

SCOPES = ("global", "layer")


class CollapseWarning(UserWarning):
    """A layer kept less than one output unit's worth of weights, or far below the density."""


@dataclass(frozen=True)
class Floor:
    """The per-layer minimum :func:`keep_masks` guarantees.

    Attributes:
        min_units: every layer keeps at least this many output units' worth of weights
            (``min_units * size / shape[out_axis]``; the output axis comes from the channel
            graph, see :func:`out_axes`).
        min_ratio: and at least ``min_ratio * density`` of its own weights, i.e. no layer is
            pruned to below this fraction of the global density (a maximum per-layer sparsity
            of ``1 - min_ratio * density``).
    """

    min_units: int = 4
    min_ratio: float = 0.25

    def __post_init__(self) -> None:
        if self.min_units < 0 or not 0.0 <= self.min_ratio <= 1.0:
            raise ValueError(f"Floor needs min_units >= 0 and min_ratio in [0, 1], got {self}")

    def count(self, shape: tuple[int, ...], density: float, out_axis: int = -1) -> int:
        """Weights a layer of ``shape`` keeps at least, at global ``density``."""
        size = math.prod(shape)
        per_unit = _per_unit(shape, out_axis)
        return min(size, max(self.min_units * per_unit,
                             math.ceil(self.min_ratio * density * size - 1e-9)))


DEFAULT_FLOOR = Floor()


def _per_unit(shape: tuple[int, ...], out_axis: int) -> int:
    """Weights per output unit of a kernel of ``shape`` whose output channels are ``out_axis``."""
    if not shape or not shape[out_axis]:
        return 1
    return math.prod(shape) // shape[out_axis]


def out_axes(graph: Any, paths: Any) -> dict[Path, int]:
    """``{kernel path: its output-channel axis}`` read from the graph's ``out``/``depthwise``
    members (paths the graph does not describe are left out: the last axis is assumed).

    Example:
        >>> from subnets.graph import ChannelGraph, Group, Member
        >>> g = ChannelGraph((Group("h", 3, (Member(("k",), 0, role="out"),)),))
        >>> out_axes(g, [("k",)])
        {('k',): 0}
    """
    from subnets.importance import KERNEL_ROLES

    want = {tuple(p) for p in paths}
    out: dict[Path, int] = {}
    for g in graph.groups:
        for m in g.members:
            if m.path in want and m.role in KERNEL_ROLES:
                out[m.path] = m.axis
    return out


def _top(flat: np.ndarray, k: int) -> np.ndarray:
    """Bool mask of exactly ``k`` largest entries, O(n).

    Ties at the threshold keep the LATER flat indices, so earlier layers and lower indices are
    pruned first: deterministic on every device (OpenLTH's ``abs > threshold`` prunes every
    tied weight and overshoots; a ``>=`` test would keep every tie).
    """
    n = flat.shape[0]
    if k >= n:
        return np.ones(n, bool)
    if k <= 0:
        return np.zeros(n, bool)
    t = np.partition(flat, n - k)[n - k]
    keep = flat > t
    ties = np.flatnonzero(flat == t)
    need = k - int(keep.sum())
    keep[ties[ties.size - need:]] = True
    return keep


def keep_masks(scores: Mapping[Path, Any], k: int | Mapping[Path, int], *,
               scope: str = "global", floor: Floor | None = DEFAULT_FLOOR,
               warn: bool = True, axes: Mapping[Path, int] | None = None,
               ) -> dict[Path, np.ndarray]:
    """Keep exactly ``k`` weights (``scope="layer"``: ``k[path]`` per layer), guarded.

    Args:
        scores: ``{path: score array}``; ``-inf`` marks weights already pruned (never kept
            unless nothing else is left to reach ``k``).
        k: total weights to keep (global), or ``{path: count}`` (layer).
        scope: ``"global"`` or ``"layer"``.
        floor: the per-layer guard (None: a pure global ranking, which can collapse layers).
        warn: emit a :class:`CollapseWarning` per layer :func:`collapse_report` names.
        axes: ``{path: output-channel axis}`` (:func:`out_axes`); paths not named use the
            last axis.

    Returns:
        ``{path: bool array shaped like the scores}``.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not scores:
        raise ValueError("keep_masks: no scores given")
    arrays = {p: np.asarray(s, np.float64) for p, s in scores.items()}
    ax = dict(axes or {})
    for p, a in arrays.items():
        if np.isnan(a).any():
            raise ValueError(f"scores for {'/'.join(p)} contain NaN")
    total = sum(a.size for a in arrays.values())
    alive = {p: int(np.sum(a > -np.inf)) for p, a in arrays.items()}
    if scope == "layer":
        counts = dict(k) if isinstance(k, Mapping) else None
        if counts is None:
            raise ValueError("scope='layer' needs k as {path: count}")
        kept_total = sum(counts.values())
        density = kept_total / total
        if floor is not None:
            counts = {p: max(c, min(alive[p], floor.count(arrays[p].shape, density,
                                                                 ax.get(p, -1))))
                      for p, c in counts.items()}
        out = {p: _top(a.ravel(), counts[p]).reshape(a.shape) for p, a in arrays.items()}
    else:
        k = int(k)
        density = k / total
        base = {p: 0 for p in arrays}
        if floor is not None:
            base = {p: min(alive[p], floor.count(a.shape, density, ax.get(p, -1)))
                    for p, a in arrays.items()}
            need = sum(base.values())
            if need > k:  # floors alone exceed the budget: shrink them alike
                base = {p: int(b * k // need) for p, b in base.items()}
        first = {p: _top(a.ravel(), base[p]) for p, a in arrays.items()}
        flat = np.concatenate([a.ravel() for a in arrays.values()])
        taken = np.concatenate([first[p] for p in arrays])
        # Already-pruned (-inf) weights are a last resort; weights already taken sort last.
        rest = np.where(flat == -np.inf, -1e308, flat)
        rest[taken] = -np.inf
        keep = taken | _top(rest, k - int(taken.sum()))
        out, start = {}, 0
        for p, a in arrays.items():
            out[p] = keep[start:start + a.size].reshape(a.shape)
            start += a.size
    if warn:
        for msg in collapse_report(out, density, axes=ax):
            warnings.warn(msg, CollapseWarning, stacklevel=3)
    return out


def collapse_report(masks: Mapping[Path, Any], density: float | None = None, *,
                    ratio: float = 0.1, axes: Mapping[Path, int] | None = None) -> list[str]:
    """Layers pruned past the collapse threshold, one message each.

    A layer is named when it keeps fewer weights than one output unit has (``size /
    shape[out_axis]``, the axis from ``axes``, default the last), or less than ``ratio`` times
    the global ``density`` (default: the masks').

    Example:
        >>> import numpy as np
        >>> m = {("a",): np.zeros((4, 4), bool), ("b",): np.ones(8, bool)}
        >>> collapse_report(m)[0].split(":")[0]
        'layer a keeps 0 of 16 weights (density 0.0000, global 0.3333)'
    """
    sizes = {p: int(np.size(m)) for p, m in masks.items()}
    kept = {p: int(np.sum(np.asarray(m))) for p, m in masks.items()}
    if density is None:
        density = sum(kept.values()) / max(1, sum(sizes.values()))
    out = []
    for p, m in masks.items():
        shape = np.shape(m)
        per_unit = _per_unit(tuple(shape), (axes or {}).get(p, -1))
        d = kept[p] / max(1, sizes[p])
        if kept[p] < per_unit or d < ratio * density:
            out.append(f"layer {'/'.join(map(str, p))} keeps {kept[p]} of {sizes[p]} weights "
                       f"(density {d:.4f}, global {density:.4f}): pruned past the collapse "
                       f"threshold (fewer than one output unit's {per_unit} weights, or below "
                       f"{ratio:g} x the global density); keep the default floor= guard or "
                       f"use method='synflow'")
    return out
