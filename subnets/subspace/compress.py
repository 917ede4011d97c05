"""The three compression kinds LCS samples, each a pure ``compress(variables, level)`` with its
``gamma(alpha)`` map, and deployment of any level of a trained subspace.

``compress`` keeps shapes static (width *masks*, TopK masks, fake quantisation) so one jitted
step serves every level; ``deploy`` is what a device runs: for structured sparsity the arrays are
physically sliced to the first ``k`` channels of every free group.

Example:
    >>> import jax, subnets
    >>> from subnets import subspace
    >>> net = subnets.zoo.create("cpreresnet20", num_classes=10, input_shape=(8, 8, 1),
    ...                          norm="instance")
    >>> s = subspace.init_point(net, key=jax.random.key(0))
    >>> v = subspace.at_level(s, net, width=0.25)
    >>> v["params"]["stem"]["kernel"].shape
    (3, 3, 1, 4)

References:
    Nunez et al., LCS (arXiv:2110.04252), Sec. 3.2-3.5; Jacob et al., Quantization and Training
    of Neural Networks for Efficient Integer-Arithmetic-Only Inference (CVPR 2018).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from subnets.graph import ChannelGraph, Op, get_path, run, set_paths
from subnets.subspace.core import Subspace, weights
from subnets.transforms import fake_quant, prunable_paths, slice_widths, topk_mask, width_mask


class Compression(NamedTuple):
    """A compression kind as pure functions (optax style: made by a factory, no state).

    Attributes:
        kind: ``"structured"``, ``"unstructured"`` or ``"quantized"``.
        gamma: ``alpha -> level`` (traceable): width factor, density or bits.
        alpha_of: ``level -> alpha`` (Python float), the inverse used by :func:`at_level`.
        compress: ``(variables, level) -> variables`` at static shapes (traceable level).
        deploy: ``(variables, level) -> variables`` for a concrete level, physically smaller
            in the structured case.
    """

    kind: str
    gamma: Callable[[Any], Any]
    alpha_of: Callable[[float], float]
    compress: Callable[[Mapping, Any], dict]
    deploy: Callable[[Mapping, float], dict]


def channel_counts(graph: ChannelGraph, width: Any) -> dict:
    """``k = max(1, round(C * width))`` for every free group (traced if ``width`` is)."""
    if isinstance(width, int | float | np.floating):
        return {g.name: max(1, int(np.round(g.size * np.float32(width)))) for g in graph.free}
    return {g.name: jnp.maximum(1, jnp.round(g.size * width)) for g in graph.free}


def _linear(low: float, high: float):
    gamma = lambda a: low + (high - low) * a
    alpha_of = lambda level: 0.0 if high == low else (float(level) - low) / (high - low)
    return gamma, alpha_of


def structured(graph: ChannelGraph, low: float = 0.25, high: float = 1.0) -> Compression:
    """First-k channels of every free group, width = low + (high - low) * alpha."""
    gamma, alpha_of = _linear(low, high)

    def compress(variables, width):
        return width_mask(graph, variables, channel_counts(graph, width))

    def deploy(variables, width):
        if not 0.0 < float(width) <= 1.0:
            raise ValueError(f"width must be in (0, 1], got {width}")
        # Host-side NumPy slicing (slice_widths does that for concrete arrays); plain numpy
        # leaves, as the other deploys return.
        sliced = slice_widths(graph, variables, channel_counts(graph, float(width)))
        return jax.tree.map(np.asarray, sliced)

    return Compression("structured", gamma, alpha_of, compress, deploy)


def unstructured(graph: ChannelGraph | None = None, low: float = 0.025,
                 high: float = 1.0) -> Compression:
    """Per-layer magnitude TopK, density = low + (high - low) * alpha; stem and classifier dense."""
    gamma, alpha_of = _linear(low, high)

    def compress(variables, density):
        return topk_mask(variables, density, graph=graph)

    jitted = jax.jit(compress)

    def deploy(variables, density):
        if not 0.0 < float(density) <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        return jax.tree.map(np.asarray, jitted(variables, jnp.float32(density)))

    return Compression("unstructured", gamma, alpha_of, compress, deploy)


def quantized_paths(variables: Mapping, graph: ChannelGraph | None = None) -> list:
    """Kernels that are quantised: all but the stem and classifier, as in the reference."""
    order = prunable_paths(variables, graph)
    return order[1:-1]


def quantized(graph: ChannelGraph | None = None, low: int = 3, high: int = 8) -> Compression:
    """Affine signed per-tensor weight quantisation; alpha in ((i-1)/n, i/n] -> low + i - 1 bits.

    With n = high - low + 1 distinct bit widths (the reference's ``alpha_bit_map``); alpha = 0
    gives ``low``.
    """
    n = high - low + 1

    def gamma(a):
        i = jnp.clip(jnp.ceil(jnp.asarray(a) * n) - 1, 0, n - 1)
        return low + i

    def alpha_of(bits):
        return float(np.clip((float(bits) - low + 1) / n, 0.0, 1.0))

    def compress(variables, bits):
        paths = quantized_paths(variables, graph)
        return set_paths(variables, {p: fake_quant(get_path(variables, p), bits) for p in paths})

    jitted = jax.jit(compress)

    def deploy(variables, bits):
        if int(bits) != bits or not 2 <= bits <= 16:
            raise ValueError(f"bits must be an integer in [2, 16], got {bits}")
        return jax.tree.map(np.asarray, jitted(variables, jnp.float32(bits)))

    return Compression("quantized", gamma, alpha_of, compress, deploy)


_weights_jit = jax.jit(weights)


@functools.lru_cache(maxsize=32)
def make(kind: str, graph: ChannelGraph, low: float, high: float) -> Compression:
    """The compression ``kind`` over ``graph`` with level range ``[low, high]``."""
    if kind == "structured":
        return structured(graph, low, high)
    if kind == "unstructured":
        return unstructured(graph, low, high)
    if kind == "quantized":
        return quantized(graph, int(low), int(high))
    raise ValueError(f"unknown compression {kind!r}")


ACT_RANGES = "act_ranges"  # the variables collection of running activation ranges


def _run(net: Any, variables: Mapping, x: jax.Array, hook: Callable, train: bool,
         mutable: bool) -> Any:
    """``subnets.graph.run`` with the model ``apply`` conventions (``train``, ``mutable``)."""
    graph = net.graph
    if not train:
        logits = run(graph, variables, x, hook=hook)
        return (logits, variables.get("batch_stats", {})) if mutable else logits
    logits, stats = run(graph, variables, x, train=True, hook=hook)
    return (logits, stats) if mutable else logits


def range_key(layer_path: tuple) -> str:
    """The ``act_ranges`` key of a layer: its kernel path without the collection and leaf."""
    return ".".join(layer_path[1:-1]) or ".".join(layer_path)


def act_quant_apply(net: Any, variables: Mapping, x: jax.Array, bits: Any, *,
                    enabled: Any = True, ranges: Mapping[str, Any] | None = None,
                    observe: bool = False, train: bool = False, mutable: bool = False) -> Any:
    """The model with the input of every inner layer fake-quantised to ``bits``.

    The graph's program runs (:func:`subnets.graph.run`) with a hook that fake-quantises the
    input of every layer op (dense, conv and depthwise alike) except the first and the last
    (the stem and classifier inputs stay float, as in the reference). A layer's range is
    ``ranges[key]`` (``[lo, hi]``, ``key`` from :func:`range_key`), by default the running
    ranges that training keeps in ``variables["act_ranges"]`` (see :func:`init_act_ranges`),
    so an example's output does not depend on the rest of its batch; a layer without one uses
    the batch's own min/max. ``enabled`` may be a traced bool (off during warm-up).

    Returns:
        what ``net.apply`` returns; with ``observe``, the pair ``(that, seen)`` where ``seen``
        maps each quantised layer to the ``[min, max]`` of its float input in this batch.

    Example:
        >>> import jax, numpy as np, subnets
        >>> from subnets import subspace
        >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
        >>> v = net.init(jax.random.key(0))
        >>> x = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
        >>> _, seen = act_quant_apply(net, v, x, 4, observe=True)
        >>> sorted(seen)
        ['dense1', 'dense2']

    References:
        Nunez et al., LCS (arXiv:2110.04252), Sec. 3.3; Jacob et al., CVPR 2018 (running
        min/max ranges).
    """
    prunable = prunable_paths(variables, net.graph)
    skip = set(prunable[:1] + prunable[-1:])
    if ranges is None:
        ranges = variables.get(ACT_RANGES, {})
    variables = {k: v for k, v in variables.items() if k != ACT_RANGES}
    seen = {}

    def hook(op: Op, ins: tuple) -> tuple:
        if op.kind != "layer" or op.ref in skip:
            return ins
        h, key = ins[0], range_key(op.ref)
        if observe:
            seen[key] = jnp.stack([jnp.min(h), jnp.max(h)]).astype(jnp.float32)
        r = ranges.get(key)
        q = fake_quant(h, bits) if r is None else fake_quant(h, bits, lo=r[0], hi=r[1])
        return (jnp.where(enabled, q, h), *ins[1:])

    out = _run(net, variables, x, hook, train, mutable)
    return (out, seen) if observe else out


def init_act_ranges(net: Any, subspace: Subspace, x: Any) -> Subspace:
    """The subspace with running activation ranges started from one float batch ``x``.

    Training (:func:`subnets.subspace.fit`) calls this for quantised subspaces, then moves the
    ranges by an exponential moving average of every step's batch ranges.
    """
    if subspace.compression != "quantized":
        raise ValueError(f"activation ranges are for quantized subspaces, this one is "
                         f"{subspace.compression}")
    _, seen = act_quant_apply(net, weights(subspace, 1.0), x, 8, enabled=False, observe=True,
                              ranges={})
    base = {**subspace.base, ACT_RANGES: {k: np.asarray(v) for k, v in seen.items()}}
    return dataclasses.replace(subspace, base=base)


def output_groups(graph: ChannelGraph, variables: Mapping | None = None) -> dict[tuple, str]:
    """Each layer's kernel path and each norm's id -> the free group its output belongs to.

    Read from the graph's layers (``out_group``; a depthwise layer's is its input group) and
    norms (``group``). ``variables`` is not needed; the old order ``(variables, graph)`` still
    works, with a ``DeprecationWarning``.
    """
    if isinstance(graph, Mapping) and isinstance(variables, ChannelGraph):
        warnings.warn("output_groups(variables, graph) is deprecated; call "
                      "output_groups(graph)", DeprecationWarning, stacklevel=2)
        graph = variables
    free = {g.name for g in graph.free}
    out = {lay.path: lay.out_group for lay in graph.layers if lay.out_group in free}
    out.update({n.id: n.group for n in graph.norms if n.group in free})
    return out


def masked_apply(net: Any, variables: Mapping, x: jax.Array, counts: Mapping[str, Any], *,
                 train: bool = False, mutable: bool = False) -> Any:
    """``net.apply(width_mask(variables, counts), x)`` computed by masking activations.

    The graph's program runs (:func:`subnets.graph.run`) with the output of every layer and
    norm whose group is free masked to its first ``counts[group]`` channels (applied where the
    value is read, so every use of it is masked). The function (and gradient) equals masking
    the weights, but the weights stay shared: under ``jax.vmap`` over levels only activations
    gain the level axis, so XLA runs one convolution over ``levels x batch`` examples instead
    of a grouped convolution with a batched kernel, which CPUs run several times slower.
    """
    graph = net.graph
    groups = output_groups(graph)
    masked = {op.output: (groups[op.ref], _channel_axis(op)) for op in graph.program
              if op.kind in ("layer", "norm") and op.ref in groups and op.group in counts}

    def hook(op: Op, ins: tuple) -> tuple:
        out = []
        for i, h in zip(op.inputs, ins, strict=True):
            if i in masked:
                g, axis = masked[i]
                axis = axis if axis is not None else h.ndim - 1
                shape = [1] * h.ndim
                shape[axis] = h.shape[axis]
                keep = (jnp.arange(h.shape[axis]) < counts[g]).reshape(shape)
                h = h * keep.astype(h.dtype)
            out.append(h)
        return tuple(out)

    return _run(net, variables, x, hook, train, mutable)


def _channel_axis(op: Op) -> int | None:
    """The channel axis of an op's output (``None``: the last)."""
    if op.kind == "norm":
        return op.attr("axis")
    dims = op.attr("dimension_numbers")
    if op.attr("window_strides") is not None:  # conv: (lhs, rhs, out) specs
        return dims[2][1]
    return 0 if op.attr("kernel_first") else None


def _resolve(subspace: Subspace, width, density, bits) -> tuple[str, float]:
    given = {k: v for k, v in (("structured", width), ("unstructured", density),
                               ("quantized", bits)) if v is not None}
    if len(given) != 1:
        raise ValueError("give exactly one of width=, density=, bits=")
    kind, level = next(iter(given.items()))
    if kind != subspace.compression:
        name = {"structured": "width", "unstructured": "density", "quantized": "bits"}
        raise ValueError(f"this subspace was trained for {subspace.compression} compression "
                         f"(use {name[subspace.compression]}=), not {name[kind]}=")
    return kind, level


def at(subspace: Subspace, net: Any, alpha: float) -> dict:
    """Deployable variables at ``alpha`` in [0, 1]: level ``gamma(alpha)``, no recalibration."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    comp = make(subspace.compression, net.graph, subspace.low, subspace.high)
    level = comp.gamma(float(alpha))
    level = int(level) if subspace.compression == "quantized" else float(level)
    return comp.deploy(_weights_jit(subspace, jnp.float32(alpha)), level)


OUT_OF_RANGE = ("error", "warn", "allow")


class RangeWarning(UserWarning):
    """A subspace was deployed at a level outside the range it was trained on."""


def check_level(subspace: Subspace, level: float, *, out_of_range: str = "error") -> None:
    """Refuse (or warn about) a level outside the subspace's trained ``[low, high]``.

    Accuracy outside the trained range is not what training optimised: on mnist5k a width-
    [0.25, 1] subspace scores ~26% at width 0.2 and ~5% at 0.15 (see docs/results.md).

    Raises:
        ValueError: with ``out_of_range="error"``, naming the level and the range.

    Example:
        >>> import jax, subnets
        >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
        >>> s = subnets.subspace.init_point(net, key=jax.random.key(0))
        >>> check_level(s, 0.2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: width 0.2 is outside the trained range [0.25, 1.0]; pass ...
    """
    if out_of_range not in OUT_OF_RANGE:
        raise ValueError(f"out_of_range must be one of {OUT_OF_RANGE}, got {out_of_range!r}")
    if out_of_range == "allow" or subspace.low - 1e-9 <= float(level) <= subspace.high + 1e-9:
        return
    name = {"structured": "width", "unstructured": "density", "quantized": "bits"}
    msg = (f"{name[subspace.compression]} {level:g} is outside the trained range "
           f"[{subspace.low}, {subspace.high}]")
    if out_of_range == "error":
        raise ValueError(msg + "; pass out_of_range='warn' or 'allow' to extrapolate")
    warnings.warn(msg + ": accuracy there was not trained and can be near chance",
                  RangeWarning, stacklevel=3)


def at_level(subspace: Subspace, net: Any, *, width: float | None = None,
             density: float | None = None, bits: int | None = None,
             out_of_range: str = "error") -> dict:
    """Plain variables for any level of the trained range, chosen after training.

    No recalibration. A level outside ``[subspace.low, subspace.high]`` is refused unless
    ``out_of_range`` is ``"warn"`` (a :class:`RangeWarning`) or ``"allow"``; a line is then
    evaluated at the alpha whose ``gamma`` gives the level, clipped to [0, 1].

    Args:
        subspace: a trained :class:`Subspace`.
        net: the model it belongs to.
        width: structured width factor in (0, 1] (arrays are physically sliced).
        density: fraction of weights kept per pruned layer, in (0, 1].
        bits: integer weight bit width in [2, 16].
        out_of_range: ``"error"`` (default), ``"warn"`` or ``"allow"``; see :func:`check_level`.

    Example:
        >>> import jax, subnets
        >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
        >>> s = subnets.subspace.init_point(net, key=jax.random.key(0), compression="quantized")
        >>> v = subnets.subspace.at_level(s, net, bits=4)
        >>> len(set(v["params"]["dense1"]["kernel"].ravel().tolist())) <= 16
        True
    """
    kind, level = _resolve(subspace, width, density, bits)
    check_level(subspace, level, out_of_range=out_of_range)
    comp = make(kind, net.graph, subspace.low, subspace.high)
    alpha = float(np.clip(comp.alpha_of(level), 0.0, 1.0))
    return comp.deploy(_weights_jit(subspace, jnp.float32(alpha)), level)
