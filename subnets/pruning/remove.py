"""Exact dead-structure removal: turn a sparse model into a smaller dense one, same function.

A channel is *dead* when every incoming weight is zero: its slice of every producing kernel in
its group (every branch of a residual add), or its slice of a depthwise kernel that all its
consumers read through. A dead channel is not silent: it emits a constant (the activation of its
bias, a BatchNorm's ``(bias - mean) / sqrt(var + eps) * scale + shift``, an instance norm's
shift), and DNNShifter's reference code drops it anyway. Here the constant is folded into the
consumers exactly, and a channel is removed only when that is possible:

Every fact comes from the channel graph: a group's producers and consumers, each member's
role, the norm after a layer (:meth:`~subnets.graph.ChannelGraph.norm_of`: its scale, shift,
statistics and epsilon), and each consumer's geometry (kind, padding, stride, window); the
consumers' inputs are read off the jaxpr of ``model.apply``
(:func:`subnets.models.capture.layer_inputs`), so Linen, NNX and graph-only models are handled
alike.

The removal rule (with a model, which lets the constants be measured):
    1. the channel is structurally dead (above);
    2. at every consuming layer its input is input-independent (checked on two different
       probe batches), and either exactly zero, or the consumer has a bias and the channel's
       contribution to the consumer's output is the same at every output position. That holds
       for dense layers (also after a flatten: the per-position constants times their kernel
       rows), 1x1 convs and VALID convs; it fails for a SAME conv wider than 1x1 (zero padding
       makes border positions see less of the constant), so such a channel is kept unless its
       constant is 0, as it is after a ReLU of a negative shift;
    3. the contribution is added to the consumer's bias, then the channel is sliced out of every
       member of its group (kernel axes, biases, norm parameters and statistics).
    A group always keeps at least one channel. A norm that mixes channels
    (``Norm.mixes_channels``: GroupNorm, LayerNorm) is refused: a dead channel is not constant
    there and removing any channel regroups the others.

Without a model (a bare :class:`~subnets.graph.ChannelGraph`, so nothing is known about the
activations between layers) only channels that provably emit exactly 0 are removed: dead, every
bias of the group zero at that channel, every BatchNorm mapping 0 to 0 (zero shift and zero
``mean * scale``), every other norm with zero scale and shift.

With ``check=True`` (and a model) the result is compared with the original on the probe batch and a
``RuntimeError`` names the largest difference if they disagree.

Example:
    >>> import jax, subnets
    >>> from subnets.pruning import remove_dead
    >>> net = subnets.zoo.create("dnn-s", num_classes=4)
    >>> v = net.init(jax.random.key(0))
    >>> k = v["params"]["dense0"]["kernel"]
    >>> v["params"]["dense0"]["kernel"] = k.at[:, :10].set(0.0)  # 10 dead units, biases kept
    >>> small, widths = remove_dead(net, v)
    >>> widths["h0"]
    134

References:
    Eccles et al., DNNShifter (arXiv:2309.06973), Sec. 3.2 (removal of zeroed structures).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from subnets.graph import ChannelGraph, Layer, Member, Norm, Path, get_path, set_paths


def _order(first: Any, second: Any) -> tuple[Any, Mapping]:
    """``(model_or_graph, variables)`` from either argument order (the old one warns)."""
    if isinstance(first, Mapping) and not isinstance(second, Mapping):
        warnings.warn("remove_dead(variables, model) is deprecated; call "
                      "remove_dead(model_or_graph, variables)", DeprecationWarning, stacklevel=3)
        return second, first
    return first, second


def remove_dead(graph: Any, variables: Mapping, *, check: bool = True, atol: float = 1e-4,
                key: jax.Array | None = None) -> tuple[dict, dict[str, int]]:
    """Remove every dead channel that can be removed exactly; fold its constant into biases.

    Args:
        graph: the model (recommended: constants are measured and folded) or its bare
            ``ChannelGraph`` (only channels emitting exactly 0 are removed). The old order
            ``(variables, model)`` still works, with a ``DeprecationWarning``.
        variables: sparse variables (exact zeros where pruned).
        check: with a model, verify the logits on the probe batch (raise if they differ).
        atol: tolerance of that check, relative to the largest logit magnitude.
        key: probe inputs' randomness (default ``jax.random.key(0)``).

    Returns:
        ``(smaller_variables, widths)``, widths of every free group.

    Raises:
        ValueError: a norm that mixes channels (GroupNorm), or variables that do not match
            the graph.
        RuntimeError: the removed model's logits differ from the original's (``check``).
    """
    graph, variables = _order(graph, variables)
    net = graph if hasattr(graph, "graph") and hasattr(graph, "apply") else None
    g: ChannelGraph = net.graph if net is not None else graph
    if not isinstance(g, ChannelGraph):
        raise TypeError("remove_dead needs a model or a ChannelGraph, got "
                        f"{type(graph).__name__}")
    g.validate(variables, widths=g.widths_of(variables))
    label = getattr(net, "name", type(net).__name__)
    for norm in g.norms:
        if norm.mixes_channels and not g[norm.group].fixed:
            raise ValueError(
                f"remove_dead: norm {'/'.join(norm.id)} (group {norm.group!r}) normalises "
                f"channels together ({norm.num_groups} groups, as GroupNorm / LayerNorm do): a "
                "dead channel is not constant and removing one regroups the rest; use a "
                "BatchNorm, an instance norm or no norm")
    dead = {grp.name: _dead(variables, g, grp.name) for grp in g.free}
    if not any(d.any() for d in dead.values()):
        return dict(variables), g.widths_of(variables)
    key = jax.random.key(0) if key is None else key
    before = None
    if net is not None:
        probe = np.array(jax.random.normal(key, (2,) + tuple(net.input_shape), jnp.float32))
        probe[1] = probe[1] * np.float32(3.0) + np.float32(0.5)  # two clearly different inputs
        removable, folds, before = _measure(net, variables, g, dead, probe, atol)
    else:
        removable = {n: _keep_one(d & _emits_zero(variables, g, n)) for n, d in dead.items()}
        folds = {}
    # The surgery runs on host NumPy copies (no per-shape XLA compilation); the changed leaves
    # become JAX arrays once, at the end.
    updates = _fold(variables, folds)
    keeps = {n: np.flatnonzero(~rm) for n, rm in removable.items() if rm.any()}
    updates = _take(variables, g, keeps, updates)
    new = set_paths(variables, {p: jnp.asarray(a) for p, a in updates.items()})
    if check and before is not None:
        after = np.asarray(jax.jit(net.apply)(new, probe))
        err = float(np.max(np.abs(before - after)))
        scale = max(1.0, float(np.max(np.abs(before))))
        if err > atol * scale:
            raise RuntimeError(f"remove_dead: logits changed by {err:.3g} (scale {scale:.3g}); "
                               f"{label} has an op the removal rule does not model")
    return new, g.widths_of(new)


def _keep_one(rm: np.ndarray) -> np.ndarray:
    """Widths are >= 1: if every channel could go, keep the first."""
    if rm.size and rm.all():
        rm = rm.copy()
        rm[0] = False
    return rm


def _take(variables: Mapping, g: ChannelGraph, keeps: Mapping[str, np.ndarray],
          updates: Mapping[Path, np.ndarray]) -> dict[Path, np.ndarray]:
    """Keep channels ``keeps[group]`` (in order) in every member, on top of ``updates``.

    NumPy throughout (no compilation); returns every changed leaf as a NumPy array of its dtype.
    """
    updates = dict(updates)
    for name, keep in keeps.items():
        for m in g[name].members:
            a = updates.get(m.path)
            if a is None:
                a = np.asarray(get_path(variables, m.path))
            shape = a.shape
            size = shape[m.axis] // m.spatial
            view = a.reshape(shape[: m.axis] + (m.spatial, size) + shape[m.axis + 1 :])
            view = np.take(view, keep, axis=m.axis + 1)
            updates[m.path] = view.reshape(shape[: m.axis] + (m.spatial * keep.size,)
                                           + shape[m.axis + 1 :])
    return updates


def _member(g: ChannelGraph, group: str, layer: Layer, *roles: str) -> Member:
    """The member of ``layer``'s kernel in ``group`` with one of ``roles``."""
    for m in g.members(group, *roles):
        if m.path == layer.path:
            return m
    raise ValueError(f"group {group!r} has no {'/'.join(roles)} member of the kernel "
                     f"{'/'.join(layer.path)}")


def _channels_zero(a: np.ndarray, m: Member) -> np.ndarray:
    """Per channel of member ``m``: are all entries of ``a`` along the other axes zero?"""
    a = np.moveaxis(np.asarray(a), m.axis, -1)
    a = a.reshape(-1, m.spatial, a.shape[-1] // m.spatial)
    return ~np.any(a != 0, axis=(0, 1))


def _dead(variables: Mapping, g: ChannelGraph, name: str) -> np.ndarray:
    """Channels without incoming weights: every producer's ``out`` slice is zero, or every
    depthwise layer the group passes through has a zero ``depthwise`` slice."""
    producers = g.producers(name)
    depthwise = [lay for lay in g.consumers(name) if lay.kind == "depthwise"]
    size = g.widths_of(variables)[name]
    dead = np.zeros(size, bool)
    if producers:
        dead = np.ones(size, bool)
        for lay in producers:
            dead &= _channels_zero(get_path(variables, lay.path), _member(g, name, lay, "out"))
    if depthwise:
        # All consumers read the group through its depthwise convs: zero there is dead too.
        dw_dead = np.ones(size, bool)
        for lay in depthwise:
            dw_dead &= _channels_zero(get_path(variables, lay.path),
                                      _member(g, name, lay, "depthwise", "out"))
        dead |= dw_dead
    return dead


def _norm_maps_zero_to_zero(variables: Mapping, norm: Norm) -> Any:
    """Per channel: does ``norm`` map an input of exactly 0 to exactly 0?"""
    def arr(path):
        return None if path is None else np.asarray(get_path(variables, path))

    scale, shift, mean = arr(norm.scale), arr(norm.shift), arr(norm.mean)
    ok = True if shift is None else shift == 0
    if mean is not None:  # running statistics: (0 - mean) * scale / sqrt(var + eps) + shift
        return ok & (mean * (1.0 if scale is None else scale) == 0)
    # batch statistics of a constant channel: its output is the shift whatever the scale,
    # but only exact zeros are certain here (no probe measures the statistics)
    return ok & (True if scale is None else scale == 0)


def _emits_zero(variables: Mapping, g: ChannelGraph, name: str) -> np.ndarray:
    """Channels whose every bias and norm maps a zero input to exactly zero (graph-only mode)."""
    ok: Any = True
    for m in g.members(name, "bias"):
        ok = ok & (np.asarray(get_path(variables, m.path)) == 0)
    norms = {n.id: n for n in g.norms if n.group == name}  # after a layer or an add
    norms.update({n.id: n for n in map(g.norm_of, (x.path for x in g.producers(name))) if n})
    for norm in norms.values():
        ok = ok & _norm_maps_zero_to_zero(variables, norm)
    return np.broadcast_to(np.asarray(ok, bool), (g.widths_of(variables)[name],)).copy()


def _close(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    scale = max(1.0, float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
    return bool(np.all(np.abs(a - b) <= atol * 1e-2 * scale))


def _measure(net: Any, variables: Mapping, g: ChannelGraph, dead: Mapping[str, np.ndarray],
             probe: np.ndarray, atol: float) -> tuple[dict, dict, np.ndarray]:
    """Which dead channels fold exactly, the bias change of each consumer, and the logits."""
    from subnets.models.capture import layer_inputs

    consumers = {name: [lay for lay in g.consumers(name) if lay.kind != "depthwise"]
                 for name, d in dead.items() if d.any()}
    paths = {lay.path for lays in consumers.values() for lay in lays}
    seen, logits = layer_inputs(net, variables, probe, paths)
    removable = {name: np.zeros_like(d) for name, d in dead.items()}
    folds: dict[Path, np.ndarray] = {}
    for name, lays in consumers.items():
        rm = dead[name].copy()
        pending: list[tuple[Layer, np.ndarray]] = []
        for lay in lays:
            ok, delta = _consumer_fold(g, variables, lay, _member(g, name, lay, "in"),
                                       np.asarray(seen[lay.path]), rm, atol)
            rm &= ok
            pending.append((lay, delta))
        rm = _keep_one(rm)
        removable[name] = rm
        for lay, delta in pending:
            total = delta[rm].sum(axis=0) if rm.any() else 0.0
            if np.any(total != 0):
                folds[lay.bias] = folds.get(lay.bias, 0.0) + total
    return removable, folds, logits


def _kernel_view(g: ChannelGraph, variables: Mapping, lay: Layer, m: Member,
                 size: int) -> np.ndarray:
    """The kernel as ``(spatial, in_channels, taps, out_channels)`` from its members' axes."""
    kernel = np.asarray(get_path(variables, lay.path))
    out = _member(g, lay.out_group, lay, "out").axis
    rest = [a for a in range(kernel.ndim) if a not in (m.axis, out)]
    k = np.transpose(kernel, [m.axis, *rest, out])
    return k.reshape(m.spatial, size, -1, kernel.shape[out])


def _layer_op(g: ChannelGraph, lay: Layer) -> Any:
    for op in g.program:
        if op.kind == "layer" and op.ref == lay.path:
            return op
    return None


def _consumer_fold(g: ChannelGraph, variables: Mapping, lay: Layer, m: Member, x: np.ndarray,
                   candidates: np.ndarray, atol: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: can it be removed at this consumer, and its contribution to the bias."""
    size = candidates.size
    xs = x.reshape(x.shape[0], -1, m.spatial * size).reshape(x.shape[0], -1, size)
    has_bias = lay.bias is not None
    taps = _kernel_view(g, variables, lay, m, size)  # (spatial, in, taps, out)
    out_dim = taps.shape[-1]
    ok = np.zeros(size, bool)
    delta = np.zeros((size, out_dim), np.float32)
    needs = []
    for c in np.flatnonzero(candidates):
        col = xs[:, :, c]
        if not _close(col[0], col[1], atol):
            continue  # input-dependent: not dead at this consumer after all
        if not np.any(col[0] != 0):
            ok[c] = True
        elif has_bias:
            needs.append(c)
    if lay.kind == "dense":
        # Dense (also after a flatten): the constants times their kernel rows, summed.
        for c in needs:
            ok[c] = True
            delta[c] = xs[0, :, c] @ taps[:, c, 0, :]
        return ok, delta
    plain = lay.feature_groups == 1
    valid = bool(lay.padding) and all(lo == 0 and hi == 0 for lo, hi in lay.padding)
    rest = []
    for c in needs:
        w = taps[0, c]  # (taps, out)
        constant = _close(xs[0, :, c], np.broadcast_to(xs[0, :1, c], xs[0, :, c].shape), atol)
        if plain and constant and valid:
            # Every output position reads the constant through every tap: no padding involved.
            ok[c] = True
            delta[c] = xs[0, 0, c] * w.sum(axis=0)
        elif plain and not np.any(w):
            ok[c] = True  # the layer ignores the channel
        elif plain and constant:
            continue  # zero padding makes the border positions see less of the constant
        else:
            rest.append(c)
    op = _layer_op(g, lay)
    if rest and op is not None and plain:
        # A spatially varying (but input-independent) channel: push it alone through the
        # layer (no bias) and see whether its contribution is the same at every position.
        z = np.zeros((len(rest),) + x.shape[1:], x.dtype)
        zs = z.reshape(len(rest), -1, size)
        for i, c in enumerate(rest):
            zs[i, :, c] = xs[0, :, c]
        y = np.asarray(_conv(op, np.asarray(get_path(variables, lay.path)), z))
        y = y.reshape(len(rest), -1, y.shape[-1])
        for i, c in enumerate(rest):
            if _close(y[i], np.broadcast_to(y[i, :1], y[i].shape), atol):
                ok[c] = True
                delta[c] = y[i, 0]
    return ok, delta


def _conv(op: Any, kernel: np.ndarray, z: np.ndarray) -> jax.Array:
    """The conv of program op ``op`` (its strides, padding, dilation, layout), no bias."""
    ls, rs, os = op.attr("dimension_numbers")
    return lax.conv_general_dilated(
        jnp.asarray(z), jnp.asarray(kernel, z.dtype), op.attr("window_strides"),
        op.attr("padding"), rhs_dilation=op.attr("rhs_dilation"),
        dimension_numbers=lax.ConvDimensionNumbers(ls, rs, os))


def _fold(variables: Mapping, folds: Mapping[Path, Any]) -> dict[Path, np.ndarray]:
    """The consumers' biases plus their folded constants, as NumPy arrays of the bias dtype."""
    updates = {}
    for p, d in folds.items():
        b = np.asarray(get_path(variables, p))
        updates[p] = (b + d).astype(b.dtype)
    return updates
