"""Run a graph's program: the generic ``apply`` of any traced model.

Widths come from the arrays' shapes, so full, permuted, masked and sliced variables all run; no
model code is needed (a family loaded from disk runs from its graph alone).

Ops (``Op.kind``) and their attributes:

- ``layer``: ``ref`` = kernel path; dense: ``dimension_numbers`` of the ``dot_general`` and
  ``kernel_first``; conv: ``dimension_numbers`` (lhs, rhs, out specs), ``window_strides``,
  ``padding`` (explicit), ``rhs_dilation``, ``depthwise`` (feature groups = input channels).
  The layer's bias (``Layer.bias``) is added along the output's channel axis.
- ``norm``: ``ref`` = norm id; ``axis`` (channel axis) and ``stat_axes`` (spatial axes pooled by
  a batch-statistics norm, with the channels of one of ``num_groups`` groups).
- ``act``: ``name`` in :data:`ACTIVATIONS`. ``add``: residual add of two values.
- ``flatten``: merges input ``axes`` ``(a, b)`` (inclusive) into one.
- ``mean``: over ``axes`` (``keepdims``). ``max_pool`` / ``avg_pool``: ``window``, ``stride``,
  explicit ``padding`` per axis. ``output``: the logits.

Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from subnets.graph import run, trace
    >>> v = {"w": np.ones((3, 2), np.float32)}
    >>> g = trace(lambda v, x: jnp.maximum(x, 0) @ v["w"], v, np.ones((1, 3), np.float32))
    >>> run(g, v, np.array([[1., -1., 2.]], np.float32)).tolist()
    [[3.0, 3.0]]

References:
    Ioffe & Szegedy, Batch Normalization (ICML 2015); Wu & He, Group Normalization (ECCV 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from subnets import ops
from subnets.graph.types import ChannelGraph, Norm, Op, get_path, set_paths

ACTIVATIONS: dict[str, Callable] = {
    "relu": lambda h: jnp.maximum(h, 0.0),
    "relu6": lambda h: jnp.minimum(jnp.maximum(h, 0.0), 6.0),
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
}


def _along(a: jax.Array, axis: int, ndim: int) -> jax.Array:
    """A 1-D per-channel array shaped to broadcast along ``axis`` of an ``ndim`` array."""
    shape = [1] * ndim
    shape[axis] = a.shape[0]
    return jnp.reshape(a, shape)


def _layer(graph: ChannelGraph, variables: Mapping, op: Op, h: jax.Array) -> jax.Array:
    layer = graph.layer(op.ref)
    k = jnp.asarray(get_path(variables, op.ref)).astype(h.dtype)
    if layer.kind == "dense":
        dims = op.attr("dimension_numbers")
        y = lax.dot_general(k, h, dims) if op.attr("kernel_first") else lax.dot_general(h, k, dims)
    else:
        ls, rs, os = op.attr("dimension_numbers")
        groups = h.shape[ls[1]] if op.attr("depthwise") else 1
        y = ops.conv(
            h, k, op.attr("window_strides"), op.attr("padding"),
            rhs_dilation=op.attr("rhs_dilation"),
            dimension_numbers=lax.ConvDimensionNumbers(ls, rs, os), feature_group_count=groups)
    if layer.bias is not None:
        b = jnp.asarray(get_path(variables, layer.bias)).astype(y.dtype)
        axis = os[1] if layer.kind != "dense" else _dense_axis(op, h.ndim)
        y = y + _along(b, axis, y.ndim)
    return y


def _dense_axis(op: Op, ndim_in: int) -> int:
    return 0 if op.attr("kernel_first") else ndim_in - 1


def _norm(norm: Norm, variables: Mapping, op: Op, h: jax.Array, train: bool,
          updates: dict) -> jax.Array:
    axis, nd = op.attr("axis"), h.ndim

    def param(path):
        return None if path is None else _along(jnp.asarray(get_path(variables, path)), axis, nd)

    if norm.mean is not None and not train:
        mean, var = param(norm.mean), param(norm.var)
    elif norm.mean is not None:
        red = tuple(i for i in range(nd) if i != axis)
        mean = jnp.mean(h, red, keepdims=True)
        var = jnp.maximum(jnp.mean(h * h, red, keepdims=True) - mean * mean, 0.0)
        if norm.momentum is None:
            raise ValueError(f"norm {'/'.join(norm.id)}: momentum unknown, cannot update its "
                             "running statistics (trace with train_apply_fn=...)")
        m = norm.momentum
        for path, stat in ((norm.mean, mean), (norm.var, var)):
            old = jnp.asarray(get_path(variables, path))
            updates[path] = m * old + (1.0 - m) * stat.reshape(old.shape)
    else:
        c = h.shape[axis]
        g = norm.num_groups if norm.mixes_channels else c
        if g is None or c % g:
            raise ValueError(f"norm {'/'.join(norm.id)}: {c} channels do not split into "
                             f"{g} groups")
        hr = h.reshape(h.shape[:axis] + (g, c // g) + h.shape[axis + 1 :])
        red = tuple(i if i < axis else i + 1 for i in op.attr("stat_axes")) + (axis + 1,)
        mean = jnp.mean(hr, red, keepdims=True)
        var = jnp.maximum(jnp.mean(hr * hr, red, keepdims=True) - mean * mean, 0.0)
        mean = jnp.broadcast_to(mean, hr.shape).reshape(h.shape)
        var = jnp.broadcast_to(var, hr.shape).reshape(h.shape)
    y = h - mean
    mul = lax.rsqrt(var + norm.epsilon)
    scale, shift = param(norm.scale), param(norm.shift)
    if scale is not None:
        mul = mul * scale
    y = y * mul
    return y if shift is None else y + shift


def run(graph: ChannelGraph, variables: Mapping, x: Any, *, train: bool = False,
        hook: Callable[[Op, tuple], tuple] | None = None) -> Any:
    """Execute ``graph.program`` on ``variables`` and a batch ``x``.

    Args:
        graph: a graph with a program (e.g. from :func:`subnets.graph.trace`).
        variables: full, permuted, masked or sliced variables.
        x: a batch of inputs.
        train: batch statistics in running-statistics norms, and return their update.
        hook: ``hook(op, inputs) -> inputs``, called before every op with its input values
            (a tuple) and returning the values the op then reads, e.g. to fake-quantise every
            layer's input or mask channels; ``None`` runs the program as it is.

    Returns:
        The logits; with ``train=True``, ``(logits, new_batch_stats)`` where the second is the
        statistics' collection (e.g. ``variables["batch_stats"]``) with the running averages
        updated by each norm's momentum.

    Raises:
        ValueError: the graph has no program, or a norm's momentum is unknown in train mode.
    """
    if not graph.program:
        raise ValueError("graph has no program (declared by hand?); trace the model instead")
    vals: dict[int, Any] = {0: jnp.asarray(x)}
    updates: dict = {}
    out = None
    for op in graph.program:
        ins = [vals[i] for i in op.inputs]
        if hook is not None:
            ins = list(hook(op, tuple(ins)))
        k = op.kind
        if k == "layer":
            y = _layer(graph, variables, op, ins[0])
        elif k == "norm":
            y = _norm(graph.norm(op.ref), variables, op, ins[0], train, updates)
        elif k == "act":
            y = ACTIVATIONS[op.attr("name")](ins[0])
        elif k == "add":
            y = ins[0] + ins[1]
        elif k == "flatten":
            a, b = op.attr("axes")
            s = ins[0].shape
            y = ins[0].reshape(s[:a] + (math.prod(s[a : b + 1]),) + s[b + 1 :])
        elif k == "mean":
            y = jnp.mean(ins[0], op.attr("axes"), keepdims=op.attr("keepdims", False))
        elif k in ("max_pool", "avg_pool"):
            h = ins[0]
            win, stride, pad = op.attr("window"), op.attr("stride"), op.attr("padding")
            if k == "max_pool":
                y = lax.reduce_window(h, -jnp.inf, lax.max, win, stride, pad)
            else:
                y = lax.reduce_window(h, 0.0, lax.add, win, stride, pad) / math.prod(win)
        elif k == "output":
            out = ins[0]
            continue
        else:
            raise ValueError(f"program op {k!r} unknown")
        vals[op.output] = y
    if not train:
        return out
    stats = {}
    if updates:
        collection = next(iter(updates))[0]
        sub = {p[1:]: a for p, a in updates.items() if p[0] == collection}
        stats = set_paths(variables[collection], sub)
    return out, stats
