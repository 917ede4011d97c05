"""Reconvene: unstructured pruning at init decides which layers become smaller dense layers.

1. **Pruning at initialisation** (:func:`~subnets.pruning.pai.prune_at_init`, SynFlow by
   default; the paper uses magnitude) with one global ranking, so layers end at different
   densities, under the per-layer floor of :mod:`subnets.pruning.scoring`.
2. **Pruning Sensitivity Evaluator**: a layer whose sparsity is above the global sparsity (the
   share of all prunable weights removed, i.e. ``1 - density``) is *resilient*; the rest are
   *sensitive*.
3. **Resilient Layer Rectifier**: a resilient layer's output channel group is narrowed and the
   layer becomes DENSE, Kaiming re-initialised. The new width is ``ceil(layer density * width)``
   (``width="density"``, the default): the layer keeps the share of its weights PaI gave it,
   now as whole channels. The alternative ``width="alive"`` keeps every channel that still has
   any weight, which is exact but barely shrinks anything: at 10% density almost every channel
   keeps at least one of its hundreds of weights (the report gives both counts per group).
   Channels are ranked by how many kept weights touch them (in the producing kernels and in the
   consumers' input axes), so the sensitive consumers keep the inputs PaI valued most. Narrowing
   goes through the channel graph: a group written by several layers (a residual stream, a
   depthwise conv sharing its input's channels) narrows only when every writer is resilient,
   to the widest of their widths; otherwise it stays whole and its resilient writers stay sparse.
   Fixed groups (classes) never narrow.
4. **Sensitive layers** stay unstructured-sparse: their masks (permuted and sliced along with the
   narrowed groups) go to :func:`subnets.pruning.masked_optimizer` for the one training run.

Example:
    >>> import jax, jax.numpy as jnp, subnets
    >>> from subnets.pruning.reconvene import reconvene
    >>> net = subnets.zoo.create("dnn-s", num_classes=4)
    >>> v = net.init(jax.random.key(0))
    >>> r = reconvene(net, v, density=0.2, key=jax.random.key(1))
    >>> min(r.widths.values()) < 144, subnets.cost.params(net, r.widths) < subnets.cost.params(net)
    (True, True)
    >>> net.apply(r.variables, jnp.ones((1, 250))).shape
    (1, 4)

References:
    Eccles et al., Rapid Deployment of DNNs for Edge Computing via Structured Pruning at
    Initialization (Reconvene, arXiv:2404.16877).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from subnets import cost
from subnets.graph import ChannelGraph, Path, get_path, set_paths
from subnets.importance import KERNEL_ROLES
from subnets.pruning.pai import Masks, prune_at_init
from subnets.pruning.scoring import DEFAULT_FLOOR, Floor
from subnets.transforms import slice_widths

WIDTH_RULES = ("density", "alive")


class ReconveneResult(NamedTuple):
    """What :func:`reconvene` returns.

    Attributes:
        net: the network (its ``apply`` reads the new widths off the variables).
        variables: rectified layers dense and Kaiming re-initialised, the rest masked.
        masks: keep-masks of the layers that stay sparse (train with ``pruning.masked_optimizer``).
        widths: every free group's width.
        report: per-layer and per-group decisions and totals (JSON-ready).
    """

    net: Any
    variables: dict
    masks: Masks
    widths: dict[str, int]
    report: dict


def _name(p: Path) -> str:
    return "/".join(p)


def _channel_counts(graph: ChannelGraph, masks: Mapping[Path, Any], group: str,
                    writers: set[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Per channel of ``group``: kept weights touching it, and whether a writer keeps any."""
    g = graph[group]
    touch = np.zeros(g.size, np.int64)
    alive = np.zeros(g.size, bool)
    for m in g.members:
        if m.path not in masks:
            continue
        a = np.asarray(masks[m.path])
        a = a.reshape(a.shape[: m.axis] + (m.spatial, g.size) + a.shape[m.axis + 1:])
        other = tuple(i for i in range(a.ndim) if i != m.axis + 1)
        kept = a.sum(axis=other)
        touch += kept
        if m.path in writers:
            alive |= kept > 0
    return touch, alive


def _select(graph: ChannelGraph, variables: Mapping, keep: Mapping[str, np.ndarray]) -> dict:
    """Keep channels ``keep[g]`` (in that order) in every member of each named group.

    One :meth:`ChannelGraph.take` (``slice_widths(permute(...))`` in one gather, NumPy on
    concrete arrays).
    """
    return graph.take(variables, {g: np.asarray(idx, np.int64) for g, idx in keep.items()})


def _kaiming(graph: ChannelGraph, variables: Mapping, paths: list[Path],
            key: jax.Array) -> dict[Path, np.ndarray]:
    """Kaiming-normal kernels (``jax.nn.initializers.he_normal``: truncated at 2 sigma).

    The fan-in is the kernel's size over its output channels (its ``out`` member's axis in
    the graph). One draw for all kernels, then split: a draw per shape would compile per shape.
    """
    if not paths:
        return {}
    shapes = [np.shape(get_path(variables, p)) for p in paths]
    sizes = [math.prod(s) for s in shapes]
    flat = np.asarray(jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),), jnp.float32))
    out, start = {}, 0
    for p, shape, n in zip(paths, shapes, sizes, strict=True):
        fan_in = n // shape[_out_axis(graph, p)]
        # .87962566 is the std of a unit normal truncated at +-2 (as in he_normal).
        std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
        out[p] = (flat[start:start + n] * std).reshape(shape).astype(np.float32)
        start += n
    return out


def _out_axis(graph: ChannelGraph, path: Path) -> int:
    """The output-channel axis of the layer kernel at ``path``."""
    layer = graph.layer(path)
    for m in graph.members(layer.out_group, *KERNEL_ROLES):
        if m.path == layer.path:
            return m.axis
    raise ValueError(f"graph: layer {'/'.join(path)} has no output member in group "
                     f"{layer.out_group!r}")


def default_prunable(net: Any) -> list[Path]:
    """Kernels Reconvene prunes: every layer except those writing a fixed group (classifier).

    Reconvene targets the convolution layers. Pruning the classifier too lets a global
    magnitude ranking at init empty it entirely (its fan-in-scaled weights are among the
    smallest), which makes the network's output constant whatever training does.
    """
    fixed = {g.name for g in net.graph.groups if g.fixed}
    return [layer.path for layer in net.graph.layers if layer.out_group not in fixed]


def reconvene(net: Any, variables: Mapping, x: Any = None, y: Any = None, *, density: float,
              method: str = "synflow", width: str = "density", key: jax.Array,
              prunable: Iterable[Path] | None = None, rounds: int | None = None,
              floor: Floor | None = DEFAULT_FLOOR) -> ReconveneResult:
    """Prune at init, rectify the resilient layers into narrower dense ones.

    Args:
        net: a model (its channel graph drives the narrowing): a zoo model, or any Flax
            model through :func:`subnets.models.from_linen` / :func:`~subnets.models.from_nnx`.
        variables: freshly initialised variables.
        x, y: one batch for data-driven scores (``snip``, ``grasp``).
        density: fraction of prunable weights PaI keeps.
        method: PaI score, one of :data:`subnets.importance.WEIGHT_CRITERIA` (default
            ``synflow``: on mnist5k it keeps dnn-s above 50% at 5% density where magnitude,
            the paper's choice, collapses a layer; see docs/results.md).
        width: ``"density"`` (default) or ``"alive"``; see the module docstring.
        key: randomness for the scores and the Kaiming re-initialisation.
        prunable: kernel paths (default: :func:`default_prunable`, all but the classifier).
        rounds: PaI rounds (SynFlow default 100).
        floor: per-layer collapse guard of the PaI step (None: off); a layer's floor also
            bounds its rectified width from below.

    Returns:
        A :class:`ReconveneResult`; train it once with ``masked_optimizer(tx, result.masks)``.

    References:
        Eccles et al., Reconvene (arXiv:2404.16877), Sec. III (PSE and RLR).
    """
    if width not in WIDTH_RULES:
        raise ValueError(f"width must be one of {WIDTH_RULES}, got {width!r}")
    graph: ChannelGraph = net.graph
    k_score, k_init = jax.random.split(key)
    prunable = default_prunable(net) if prunable is None else list(prunable)
    masks = prune_at_init(net, variables, x, y, density=density, method=method, key=k_score,
                          prunable=prunable, rounds=rounds, floor=floor)
    sizes = {p: int(np.size(m)) for p, m in masks.items()}
    kept = {p: int(np.sum(np.asarray(m))) for p, m in masks.items()}
    global_sparsity = 1.0 - sum(kept.values()) / sum(sizes.values())
    layer_sparsity = {p: 1.0 - kept[p] / sizes[p] for p in masks}
    resilient = {p for p, s in layer_sparsity.items() if s > global_sparsity}

    writers: dict[str, list[Path]] = {}
    for layer in graph.layers:
        writers.setdefault(layer.out_group, []).append(layer.path)
    new_widths: dict[str, int] = {}
    perms: dict[str, np.ndarray] = {}
    groups_report: dict[str, dict] = {}
    blocked: dict[Path, str] = {}
    for g in graph.free:
        ws = writers.get(g.name, [])
        if not ws:
            continue
        touch, alive = _channel_counts(graph, masks, g.name, set(ws))
        sensitive = [p for p in ws if p not in resilient]
        row = {"size": g.size, "writers": [_name(p) for p in ws],
               "alive_channels": int(alive.sum())}
        if sensitive:
            for p in ws:
                if p in resilient:
                    blocked[p] = f"group {g.name!r} also written by {_name(sensitive[0])}"
            row["width"] = g.size
        else:
            if width == "density":
                w = math.ceil(max(kept[p] / sizes[p] for p in ws) * g.size)
            else:
                w = int(alive.sum())
            w = int(min(g.size, max(1, w)))
            # Stable sort: equal counts keep their original order.
            perms[g.name] = np.argsort(-touch, kind="stable")
            new_widths[g.name] = w
            row["width"] = w
        groups_report[g.name] = row
    rectified = {p for g in new_widths for p in writers[g]}

    # Masks travel through the same channel selection as the weights they belong to.
    keep = {g: perms[g][:w] for g, w in new_widths.items()}
    new = _select(graph, variables, keep)
    mask_tree = _select(graph, set_paths(variables, dict(masks)), keep)
    sparse_masks = {p: np.asarray(get_path(mask_tree, p), bool) for p in masks
                    if p not in rectified}
    new = set_paths(new, _kaiming(graph, new, sorted(rectified), k_init))
    new = set_paths(new, {p: np.where(m, np.asarray(get_path(new, p)), 0).astype(np.float32)
                          for p, m in sparse_masks.items()})

    widths = {**graph.widths_of(variables), **new_widths}
    layers_report = {}
    for p in masks:
        if p in rectified:
            action = "rectified: dense, Kaiming re-initialised"
        elif p in blocked:
            action = f"sparse ({blocked[p]})"
        elif p in resilient:
            action = "sparse (output channels are fixed)"
        else:
            action = "sparse"
        layers_report[_name(p)] = {"density": kept[p] / sizes[p],
                                   "sparsity": layer_sparsity[p],
                                   "resilient": p in resilient, "action": action}
    full_params = cost.params(net)
    dense_params = cost.params(net, widths)
    pruned = sum(int(np.size(m) - np.sum(np.asarray(m))) for m in sparse_masks.values())
    report = {
        "method": method, "target_density": float(density), "width_rule": width,
        "global_sparsity": global_sparsity,
        "mean_layer_sparsity": float(np.mean(list(layer_sparsity.values()))),
        "layers": layers_report, "groups": groups_report,
        "params_full": full_params, "params_dense": dense_params,
        "params_nonzero": dense_params - pruned,
        "compression": full_params / max(1, dense_params - pruned),
    }
    return ReconveneResult(net, new, sparse_masks, widths, report)


def structured_init(net: Any, *, density: float, key: jax.Array) -> tuple[dict, dict[str, int]]:
    """Structured pruning at init baseline: every free group narrowed by one common factor.

    The factor is found by bisection so the prunable kernels hold about ``density`` of their
    full size (a conv's size scales with its input times its output width, so the factor is
    near ``sqrt(density)``); the network is freshly initialised at those widths, kernels
    Kaiming-normal like Reconvene's rectified layers.

    Returns:
        ``(variables, widths)``.

    Example:
        >>> import jax, subnets
        >>> net = subnets.zoo.create("dnn-s", num_classes=4)
        >>> v, w = structured_init(net, density=0.25, key=jax.random.key(0))
        >>> w["h0"]  # the 250 inputs stay, so hidden widths shrink by more than sqrt(0.25)
        54
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    graph = net.graph
    kernels = {layer.path for layer in graph.layers}

    def kernel_params(widths):
        shapes = cost.array_shapes(net, widths)
        return sum(math.prod(s) for p, s in shapes.items() if p in kernels)

    def at(f):
        return {g.name: max(1, min(g.size, round(f * g.size))) for g in graph.free}

    full = kernel_params(None)
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kernel_params(at(mid)) < density * full else (lo, mid)
    widths = at(hi)
    k_init, k_he = jax.random.split(key)
    # Fresh full-size variables sliced to the widths: the norms and biases start as at init,
    # the kernels are drawn again at their new fan-in.
    variables = slice_widths(graph, net.init(k_init), widths)
    return set_paths(variables, _kaiming(graph, variables, sorted(kernels), k_he)), widths
