"""Exact cost of any width assignment: MACs, parameters, bytes, peak activation memory.

Costs are coupled: a layer's MACs depend on both its input and its output width (the REDS
reference charged each unit its FULL fan-in, which overstates the cost of narrow levels), and a
depthwise layer follows its input group. Parameter counts come from the arrays' real shapes, so
biases, norms and flatten-expanded dense inputs are all counted.

Example:
    >>> import subnets
    >>> net = subnets.zoo.create("dnn-s", num_classes=12)
    >>> subnets.cost.macs(net)  # 250*144 + 144*144*2 + 144*12
    79200
    >>> subnets.cost.macs(net, {"h0": 72})  # 250*72 + 72*144 + 144*144 + 144*12
    50832

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.3 (MAC budgets).
"""

from __future__ import annotations

import builtins
import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from subnets.graph import ChannelGraph, leaf_paths


def _graph(net_or_graph: Any) -> ChannelGraph:
    return net_or_graph if isinstance(net_or_graph, ChannelGraph) else net_or_graph.graph


def resolve_widths(graph: ChannelGraph, widths: Mapping[str, int] | None = None) -> dict[str, int]:
    """Every group's width (fixed groups at their size), with ``widths`` overriding."""
    widths = dict(widths or {})
    graph.check_widths(widths)
    return {g.name: int(widths.get(g.name, g.size)) for g in graph.groups}


def layer_macs(net: Any, widths: Mapping[str, int] | None = None) -> dict[str, int]:
    """MACs of every layer, keyed by the kernel's path joined with ``/``."""
    graph = _graph(net)
    w = resolve_widths(graph, widths)
    out = {}
    for layer in graph.layers:
        m = layer.positions * layer.window * w[layer.in_group]
        if layer.kind != "depthwise":
            m *= w[layer.out_group]
        out["/".join(layer.path)] = m
    return out


def macs(net: Any, widths: Mapping[str, int] | None = None) -> int:
    """Multiply-accumulates of one forward pass of one example at ``widths``."""
    return builtins.sum(layer_macs(net, widths).values())


@functools.lru_cache(maxsize=64)
def _shapes(net: Any) -> tuple:
    shapes = jax.eval_shape(net.init, jax.random.key(0))
    return tuple((p, tuple(s.shape)) for p, s in leaf_paths(shapes))


def array_shapes(net: Any, widths: Mapping[str, int] | None = None,
                 collection: str | None = "params") -> dict:
    """Shape of every array at ``widths`` (``collection=None`` for all collections)."""
    graph = net.graph
    w = resolve_widths(graph, widths)
    by_path = graph.members_by_path()
    out = {}
    for path, shape in _shapes(net):
        if collection is not None and path[0] != collection:
            continue
        shape = list(shape)
        for g, m in by_path.get(path, ()):
            shape[m.axis] = m.spatial * w[g.name]
        out[path] = tuple(shape)
    return out


def params(net: Any, widths: Mapping[str, int] | None = None) -> int:
    """Trainable parameters at ``widths`` (the ``params`` collection)."""
    return builtins.sum(math.prod(s) for s in array_shapes(net, widths).values())


def bytes(net: Any, widths: Mapping[str, int] | None = None, dtype: Any = np.float32) -> int:  # noqa: A001
    """Bytes of the parameters stored as ``dtype`` (``np.int8`` for a quantised model)."""
    return params(net, widths) * np.dtype(dtype).itemsize


def activation_memory(net: Any, widths: Mapping[str, int] | None = None,
                      dtype: Any = np.float32) -> int:
    """Peak activation bytes of a layer-by-layer executor for one example.

    Each layer needs its input and output buffers alive at once; the peak over layers is the
    lower bound an arena planner (as in TFLite-Micro) reaches for a sequential network. A
    residual network also holds the shortcut tensor, which this bound leaves out.
    """
    graph = _graph(net)
    w = resolve_widths(graph, widths)
    peak = 0
    for layer in graph.layers:
        size_in = layer.in_positions * w[layer.in_group]
        size_out = layer.positions * w[layer.out_group]
        peak = max(peak, size_in + size_out)
    return peak * np.dtype(dtype).itemsize


def summary(net: Any, widths: Mapping[str, int] | None = None) -> dict:
    """A JSON-ready report: totals and, per group, width and the MACs it touches."""
    graph = net.graph
    w = resolve_widths(graph, widths)
    per_layer = layer_macs(net, widths)
    groups = []
    for g in graph.groups:
        touched = [lay for lay in graph.layers if g.name in (lay.in_group, lay.out_group)]
        groups.append({
            "name": g.name, "width": w[g.name], "size": g.size, "fixed": g.fixed,
            "members": len(g.members),
            "macs_touched": builtins.sum(per_layer["/".join(lay.path)] for lay in touched),
        })
    from subnets.models.protocol import describe

    return {
        **describe(net), "norm": getattr(net, "norm", None),
        "macs": macs(net, widths), "params": params(net, widths),
        "bytes_float32": bytes(net, widths), "bytes_int8": bytes(net, widths, np.int8),
        "activation_bytes_float32": activation_memory(net, widths),
        "groups": groups, "layers": per_layer,
    }
