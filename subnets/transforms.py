"""Pure transforms of a variables tree, driven by the channel graph.

``permute`` reorders channels (the function is unchanged), ``slice_widths`` keeps the first
``k`` channels of every group (arrays physically shrink: what a device runs), ``width_mask``
zeroes the rest instead (shapes stay static, so one compilation serves every width and
``jax.vmap`` runs several widths at once). ``apply(slice_widths(v, g, w), x)`` equals
``apply(width_mask(v, g, w), x)``.

``topk_mask`` (per-layer magnitude sparsity), ``fake_quant`` (affine quantisation with a
straight-through gradient) and ``interpolate`` (a point on a line of weights) are the other
compressions LCS samples.

Example:
    >>> import jax, subnets
    >>> net = subnets.zoo.create("dnn-s", num_classes=12)
    >>> v = net.init(jax.random.key(0))
    >>> small = subnets.slice_widths(v, net.graph, {"h0": 16, "h1": 16, "h2": 16})
    >>> small["params"]["dense1"]["kernel"].shape
    (16, 16)

References:
    Corti et al., REDS (arXiv:2311.13349); Nunez et al., LCS (arXiv:2110.04252);
    Yu et al., Slimmable Neural Networks (ICLR 2019).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from subnets import _checks
from subnets.graph import ChannelGraph, Member, Path, get_path, leaf_paths, set_paths

Variables = Mapping[str, Any]


def _view(a: jax.Array, m: Member, size: int) -> jax.Array:
    """View member axis ``m.axis`` of ``a`` as ``(spatial, size)``."""
    shape = a.shape
    return a.reshape(shape[: m.axis] + (m.spatial, size) + shape[m.axis + 1 :])


def _unview(a: jax.Array, m: Member) -> jax.Array:
    shape = a.shape
    return a.reshape(shape[: m.axis] + (shape[m.axis] * shape[m.axis + 1],) + shape[m.axis + 2 :])


def _is_traced(a: Any) -> bool:
    return isinstance(a, jax.core.Tracer)


def _map_members(variables: Variables, graph: ChannelGraph, names: Iterable[str], fn) -> dict:
    """Apply ``fn(viewed_array, group, member, xp) -> viewed_array`` to every member of ``names``.

    Concrete arrays go through NumPy (``xp = np``): eager jnp ops would compile once per array
    shape, which made slicing a ResNet take seconds; traced arrays (under ``jit``/``vmap``) go
    through ``jax.numpy``.
    """
    updates: dict[Path, Any] = {}
    for name in names:
        g = graph[name]
        for m in g.members:
            a = updates.get(m.path)
            if a is None:
                a = get_path(variables, m.path)
                a = a if _is_traced(a) else np.asarray(a)
            xp = jnp if _is_traced(a) else np
            size = a.shape[m.axis] // m.spatial
            updates[m.path] = _unview(fn(_view(a, m, size), g, m, xp), m)
    return set_paths(variables, updates)


def permute(variables: Variables, graph: ChannelGraph, perms: Mapping[str, Any]) -> dict:
    """Reorder channels: new channel ``i`` of group ``g`` is old channel ``perms[g][i]``.

    Args:
        variables: the variables tree.
        graph: its channel graph.
        perms: ``{group_name: int array of the group's size}``; fixed groups are refused.

    Returns:
        A new tree computing the same function (up to float rounding order).
    """
    for name in perms:
        g = graph[name]
        if g.fixed:
            raise ValueError(f"cannot permute fixed group {name!r}")
    perms = {n: _checks.permutation(p, graph[n].size, n) for n, p in perms.items()}

    def take(a, g, m, xp):
        p = perms[g.name]
        if _is_traced(p):
            a, xp = jnp.asarray(a), jnp
        return xp.take(a, p if xp is jnp else np.asarray(p), axis=m.axis + 1)

    return _map_members(variables, graph, perms, take)


def slice_widths(variables: Variables, graph: ChannelGraph, widths: Mapping[str, int]) -> dict:
    """Keep the first ``widths[g]`` channels of each named group (static Python ints).

    Groups not named keep their current width. Every member of a group is sliced, so
    the result is a smaller network that ``net.apply`` runs directly.
    """
    graph.check_widths(widths)
    for name, w in widths.items():
        if not isinstance(w, int | jnp.integer) and not hasattr(w, "__index__"):
            raise TypeError(f"slice_widths needs static int widths; group {name!r} got {type(w)}")
    names = [n for n in widths if not graph[n].fixed]
    def prefix(a, g, m, xp):
        index = [slice(None)] * a.ndim
        index[m.axis + 1] = slice(0, int(widths[g.name]))
        return a[tuple(index)]

    return _map_members(variables, graph, names, prefix)


def width_mask(variables: Variables, graph: ChannelGraph, widths: Mapping[str, Any]) -> dict:
    """Zero every channel at index >= ``widths[g]`` in every member of each group.

    Widths may be traced scalars, so this works under ``jit`` and ``vmap`` (one compilation
    for all widths). Gradients of masked weights are zero.
    """
    graph.check_widths({n: w for n, w in widths.items() if not _checks.is_traced(w)})
    names = [n for n in widths if not graph[n].fixed]

    def mask(a, g, m, xp):
        keep = jnp.arange(a.shape[m.axis + 1]) < widths[g.name]
        shape = [1] * a.ndim
        shape[m.axis + 1] = a.shape[m.axis + 1]
        return jnp.asarray(a) * keep.reshape(shape).astype(a.dtype)

    return _map_members(variables, graph, names, mask)


def prunable_paths(variables: Variables, graph: ChannelGraph | None = None) -> list[Path]:
    """Kernel paths in compute order: the graph's layer order, else definition order."""
    if graph is not None and graph.layers:
        return [layer.path for layer in graph.layers]
    return [p for p, leaf in leaf_paths(variables)
            if p[-1] == "kernel" and getattr(leaf, "ndim", 0) >= 2]


def _resolve_exclude(exclude, order: list[Path]) -> set[Path]:
    if exclude is None:
        return set()
    if exclude == "first_last":
        return {order[0], order[-1]} if order else set()
    return {tuple(p) for p in exclude}


def topk_masks(variables: Variables, density: Any, *, exclude: Any = "first_last",
               graph: ChannelGraph | None = None) -> dict:
    """Boolean keep-masks of per-layer magnitude TopK for every prunable kernel.

    Each kernel keeps its ``max(1, round(density * n))`` largest-magnitude weights. Ties at the
    threshold are all kept (a mask may hold a few more than k weights when magnitudes repeat,
    which only happens for exactly equal floats; a strict count would need a sort-based index
    scatter that breaks ties arbitrarily, and arbitrary differs between devices).

    Args:
        variables: the variables tree.
        density: fraction kept in (0, 1]; may be traced (vmappable).
        exclude: ``"first_last"`` (default: stem and classifier stay dense), ``None``, or an
            iterable of kernel paths.
        graph: optional, gives the layer order for ``"first_last"``.

    Returns:
        ``{path: bool array}`` for the kernels that are pruned.
    """
    order = prunable_paths(variables, graph)
    skip = _resolve_exclude(exclude, order)
    masks = {}
    for p in order:
        if p in skip:
            continue
        w = jax.lax.stop_gradient(jnp.asarray(get_path(variables, p)))
        flat = jnp.sort(jnp.abs(w).ravel())
        n = flat.shape[0]
        k = jnp.clip(jnp.round(density * n).astype(jnp.int32), 1, n)
        masks[p] = jnp.abs(w) >= flat[n - k]
    return masks


def topk_mask(variables: Variables, density: Any, *, exclude: Any = "first_last",
              graph: ChannelGraph | None = None) -> dict:
    """Per-layer magnitude TopK sparsity: the variables with small weights set to zero.

    See :func:`topk_masks` for the arguments. Gradients flow only to the kept weights.

    Example:
        >>> import numpy as np
        >>> v = {"params": {"a": {"kernel": np.ones((2, 2))},
        ...                 "b": {"kernel": np.arange(8.).reshape(2, 4)},
        ...                 "c": {"kernel": np.ones((4, 1))}}}
        >>> int((topk_mask(v, 0.5)["params"]["b"]["kernel"] != 0).sum())
        4
    """
    masks = topk_masks(variables, density, exclude=exclude, graph=graph)
    updates = {p: jnp.asarray(get_path(variables, p)) * m for p, m in masks.items()}
    return set_paths(variables, updates)


def fake_quant(x: jax.Array, bits: Any, *, lo: Any = None, hi: Any = None) -> jax.Array:
    """Affine, signed, per-tensor fake quantisation with a straight-through gradient.

    The range is ``[lo, hi]`` when given (e.g. running activation ranges; values outside are
    clipped), else the tensor's own min/max; either way it is widened to include 0 (so zero
    stays exactly representable, as integer kernels need). ``bits`` may be traced (e.g.
    sampled per step).

    Example:
        >>> import jax.numpy as jnp
        >>> q = fake_quant(jnp.linspace(-1., 1., 9), 2)
        >>> int(jnp.unique(q).size) <= 4
        True

    References:
        Nunez et al., LCS (arXiv:2110.04252), Sec. 3.3; Jacob et al., CVPR 2018.
    """
    x = jnp.asarray(x)
    levels = 2.0 ** jnp.asarray(bits, jnp.float32)
    lo = jnp.minimum(jnp.min(x) if lo is None else jnp.asarray(lo, jnp.float32), 0.0)
    hi = jnp.maximum(jnp.max(x) if hi is None else jnp.asarray(hi, jnp.float32), 0.0)
    scale = jnp.maximum((hi - lo) / (levels - 1.0), 1e-12)
    qmin = -levels / 2.0
    zero = jnp.round(-lo / scale) + qmin
    q = jnp.clip(jnp.round(x / scale) + zero, qmin, levels / 2.0 - 1.0)
    deq = ((q - zero) * scale).astype(x.dtype)
    return x + jax.lax.stop_gradient(deq - x)


def interpolate(v0: Any, v1: Any, alpha: Any) -> Any:
    """The point ``(1 - alpha) * v0 + alpha * v1`` of a line in weight space (any pytree)."""
    return jax.tree.map(lambda a, b: (1.0 - alpha) * a + alpha * b, v0, v1)
