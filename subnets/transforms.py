"""Pure transforms of a variables tree, driven by the channel graph.

``permute`` reorders channels (the function is unchanged), ``slice_widths`` keeps the first
``k`` channels of every group (arrays physically shrink: what a device runs), ``width_mask``
zeroes the rest instead (shapes stay static, so one compilation serves every width and
``jax.vmap`` runs several widths at once). ``apply(slice_widths(g, v, w), x)`` equals
``apply(width_mask(g, v, w), x)``. ``permute`` is the graph's ``take``; slicing and masking
work on the same ``(spatial, channels)`` member view (:func:`subnets.graph.view`).

``topk_mask`` (per-layer magnitude sparsity), ``fake_quant`` (affine quantisation with a
straight-through gradient) and ``interpolate`` (a point on a line of weights) are the other
compressions LCS samples.

Example:
    >>> import jax, subnets
    >>> net = subnets.zoo.create("dnn-s", num_classes=12)
    >>> v = net.init(jax.random.key(0))
    >>> small = subnets.slice_widths(net.graph, v, {"h0": 16, "h1": 16, "h2": 16})
    >>> small["params"]["dense1"]["kernel"].shape
    (16, 16)

References:
    Corti et al., REDS (arXiv:2311.13349); Nunez et al., LCS (arXiv:2110.04252);
    Yu et al., Slimmable Neural Networks (ICLR 2019).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from subnets import _checks
from subnets._order import as_graph, graph_first
from subnets.graph import ChannelGraph, Path, get_path, leaf_paths, set_paths, unview, view

Variables = Mapping[str, Any]


def permute(graph: ChannelGraph | Any, variables: Variables, perms: Mapping[str, Any]) -> dict:
    """Reorder channels: new channel ``i`` of group ``g`` is old channel ``perms[g][i]``.

    One :meth:`ChannelGraph.take` per group (NumPy for concrete arrays, ``jax.numpy`` under
    ``jit``/``vmap``).

    Args:
        graph: the channel graph, or a model with one (the old ``permute(variables, graph,
            perms)`` order still works, with a DeprecationWarning).
        variables: the variables tree.
        perms: ``{group_name: int array of the group's size}``; fixed groups are refused.

    Returns:
        A new tree computing the same function (up to float rounding order).

    Example:
        >>> import numpy as np
        >>> from subnets.graph import ChannelGraph, Group, Member
        >>> g = ChannelGraph((Group("h", 3, (Member(("k",), 1),)),))
        >>> permute(g, {"k": np.arange(3.)[None]}, {"h": [2, 0, 1]})["k"].tolist()
        [[2.0, 0.0, 1.0]]
    """
    graph, variables = graph_first(graph, variables, "permute")
    graph = as_graph(graph)
    for name in perms:
        if graph[name].fixed:
            raise ValueError(f"cannot permute fixed group {name!r}")
    perms = {n: _checks.permutation(p, graph[n].size, n) for n, p in perms.items()}
    return graph.take(variables, perms)


def slice_widths(graph: ChannelGraph | Any, variables: Variables,
                 widths: Mapping[str, int]) -> dict:
    """Keep the first ``widths[g]`` channels of each named group (static Python ints).

    Groups not named keep their current width. Every member of a group is sliced on its
    ``(spatial, channels)`` view (:func:`subnets.graph.view`), so the result is a smaller
    network that ``net.apply`` runs directly.

    Args:
        graph: the channel graph, or a model with one (the old ``slice_widths(variables,
            graph, widths)`` order still works, with a DeprecationWarning).
        variables: the variables tree.
        widths: ``{group_name: int}``.

    Example:
        >>> import numpy as np
        >>> from subnets.graph import ChannelGraph, Group, Member
        >>> g = ChannelGraph((Group("h", 3, (Member(("k",), 1),)),))
        >>> slice_widths(g, {"k": np.ones((2, 3))}, {"h": 2})["k"].shape
        (2, 2)
    """
    graph, variables = graph_first(graph, variables, "slice_widths")
    graph = as_graph(graph)
    graph.check_widths(widths)
    for name, w in widths.items():
        if not isinstance(w, int | jnp.integer) and not hasattr(w, "__index__"):
            raise TypeError(f"slice_widths needs static int widths; group {name!r} got {type(w)}")
    names = [n for n in widths if not graph[n].fixed]

    def prefix(a, m, w, xp):
        index = [slice(None)] * a.ndim
        index[m.axis + 1] = slice(0, int(w))
        return a[tuple(index)]

    # A static prefix slice rather than take(arange(w)): under jit a gather (and its
    # scatter-add gradient) would replace a plain slice (and pad).
    return _map_members(graph, variables, {n: widths[n] for n in names}, prefix)


def width_mask(graph: ChannelGraph | Any, variables: Variables,
               widths: Mapping[str, Any]) -> dict:
    """Zero every channel at index >= ``widths[g]`` in every member of each group.

    Widths may be traced scalars, so this works under ``jit`` and ``vmap`` (one compilation
    for all widths). Gradients of masked weights are zero. Each member is masked on its
    ``(spatial, channels)`` view (:func:`subnets.graph.view`), with NumPy when the arrays and
    widths are concrete.

    Args:
        graph: the channel graph, or a model with one (the old ``width_mask(variables, graph,
            widths)`` order still works, with a DeprecationWarning).
        variables: the variables tree.
        widths: ``{group_name: int or traced int}``.

    Example:
        >>> import numpy as np
        >>> from subnets.graph import ChannelGraph, Group, Member
        >>> g = ChannelGraph((Group("h", 3, (Member(("k",), 1),)),))
        >>> width_mask(g, {"k": np.ones((1, 3))}, {"h": 2})["k"].tolist()
        [[1.0, 1.0, 0.0]]
    """
    graph, variables = graph_first(graph, variables, "width_mask")
    graph = as_graph(graph)
    graph.check_widths({n: w for n, w in widths.items() if not _checks.is_traced(w)})

    def mask(a, m, w, xp):
        shape = [1] * a.ndim
        shape[m.axis + 1] = a.shape[m.axis + 1]
        return a * (xp.arange(a.shape[m.axis + 1]) < w).reshape(shape).astype(a.dtype)

    return _map_members(graph, variables,
                        {n: w for n, w in widths.items() if not graph[n].fixed}, mask)


def _map_members(graph: ChannelGraph, variables: Variables, widths: Mapping[str, Any],
                 fn: Any) -> dict:
    """``fn(viewed, member, width, xp)`` on every member's ``(spatial, channels)`` view.

    The view is :func:`subnets.graph.view` (the one the graph's ``take`` gathers on). Concrete
    arrays and widths go through NumPy (``xp = np``; eager jnp would compile once per array
    shape, which made slicing a ResNet take seconds), traced ones through ``jax.numpy``.
    """
    updates: dict[Path, Any] = {}
    for name, w in widths.items():
        for m in graph[name].members:
            a = updates.get(m.path)
            if a is None:
                a = get_path(variables, m.path)
                a = a if _checks.is_traced(a) else np.asarray(a)
            xp = jnp if _checks.is_traced(a) or _checks.is_traced(w) else np
            size = a.shape[m.axis] // m.spatial
            updates[m.path] = unview(fn(view(a, m, size), m, w, xp), m)
    return set_paths(variables, updates)


def prunable_paths(graph: ChannelGraph | Any, variables: Variables | None = None) -> list[Path]:
    """Kernel paths in compute order: the graph's layers (``graph.layers``).

    Args:
        graph: the channel graph, or a model with one. The old ``prunable_paths(variables,
            graph)`` order still works (DeprecationWarning).
        variables: unused when a graph is given.

    Graph-less call path: ``prunable_paths(variables)`` (a variables tree alone, no graph)
    returns every ``params`` array with two or more dimensions, in definition order. That is a
    layout convention (kernels are the only >= 2-D parameters), not a fact read from a graph;
    it serves hand-made trees (e.g. :func:`topk_mask` without ``graph=``) and no caller inside
    the package uses it.

    Raises:
        ValueError: the graph has no layers (declared by hand without them).
    """
    if isinstance(graph, Mapping) and as_graph(variables) is None:
        if variables is not None:
            raise TypeError("prunable_paths(variables, x): x must be a ChannelGraph or model")
        return [p for p, leaf in leaf_paths(graph)
                if p[0] == "params" and getattr(leaf, "ndim", 0) >= 2]
    graph, _ = graph_first(graph, variables, "prunable_paths")
    graph = as_graph(graph)
    if not graph.layers:
        raise ValueError("prunable_paths: the channel graph has no layers (declared by hand "
                         "without them); trace it with subnets.graph.trace")
    return [layer.path for layer in graph.layers]


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
        graph: the channel graph (or a model): its layers are the kernels pruned, in order.
            Without it (the graph-less path of :func:`prunable_paths`), every ``params``
            array of two or more dimensions is taken as a kernel, in definition order.

    Returns:
        ``{path: bool array}`` for the kernels that are pruned.
    """
    order = prunable_paths(variables) if graph is None else prunable_paths(graph)
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
