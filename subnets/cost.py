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
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from subnets.graph import ChannelGraph


def _graph(net_or_graph: Any) -> ChannelGraph:
    graph = net_or_graph if isinstance(net_or_graph, ChannelGraph) else getattr(
        net_or_graph, "graph", None)
    if not isinstance(graph, ChannelGraph):
        raise TypeError(f"cost: expected a model with a .graph or a ChannelGraph, got "
                        f"{type(net_or_graph).__name__}")
    return graph


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


def array_shapes(net: Any, widths: Mapping[str, int] | None = None,
                 collection: str | None = "params") -> dict:
    """Shape of every array at ``widths`` (``collection=None`` for all collections).

    Read from the graph's recorded full shapes (``graph.shapes``), so nothing is initialised;
    ``net`` is a model or a bare :class:`~subnets.graph.ChannelGraph`.

    Raises:
        ValueError: the graph records no array shapes (declared by hand without them).
    """
    graph = _graph(net)
    if not graph.shapes:
        raise ValueError("cost: the channel graph records no array shapes (declared by hand "
                         "without `shapes`); trace it with subnets.graph.trace")
    w = resolve_widths(graph, widths)
    by_path = graph.members_by_path()
    out = {}
    for path, shape in graph.shapes:
        if collection is not None and path[0] != collection:
            continue
        shape = list(shape)
        for g, m in by_path.get(path, ()):
            shape[m.axis] = m.spatial * w[g.name]
        out[tuple(path)] = tuple(int(s) for s in shape)
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


def norm_kind(graph: ChannelGraph) -> str | None:
    """The kind of the graph's norms, read from their statistics; None if they differ.

    ``"none"`` (no norm), ``"batch"`` (running statistics), ``"layer"`` (one group of all
    channels), ``"instance"`` (one channel per group) or ``"group"`` (groups of channels).
    """
    kinds = set()
    for n in graph.norms:
        if n.var is not None:
            kinds.add("batch")
        elif n.num_groups == 1:
            kinds.add("layer")
        elif n.mixes_channels:
            kinds.add("group")
        else:
            kinds.add("instance")
    if not kinds:
        return "none"
    return kinds.pop() if len(kinds) == 1 else None


def summary(net: Any, widths: Mapping[str, int] | None = None) -> dict:
    """A JSON-ready report: totals and, per group, width and the MACs it touches."""
    graph = _graph(net)
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
    from subnets.models.protocol import describe, num_classes

    ident = describe(net) if hasattr(net, "input_shape") else {
        "model": "ChannelGraph", "input_shape": [int(s) for s in graph.input_shape],
        "num_classes": num_classes(graph)}
    return {
        **ident, "norm": norm_kind(graph),
        "macs": macs(net, widths), "params": params(net, widths),
        "bytes_float32": bytes(net, widths), "bytes_int8": bytes(net, widths, np.int8),
        "activation_bytes_float32": activation_memory(net, widths),
        "groups": groups, "layers": per_layer,
    }
