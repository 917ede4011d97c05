"""Exact dead-structure removal: turn a sparse model into a smaller dense one, same function.

A channel is *dead* when every incoming weight is zero: its slice of every producing kernel in
its group (every branch of a residual add), or its slice of a depthwise kernel that all its
consumers read through. A dead channel is not silent: it emits a constant (the activation of its
bias, a BatchNorm's ``(bias - mean) / sqrt(var + eps) * scale + shift``, an instance norm's
shift), and DNNShifter's reference code drops it anyway. Here the constant is folded into the
consumers exactly, and a channel is removed only when that is possible:

The removal rule (with a ``Net``, which lets the constants be measured):
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
    A group always keeps at least one channel. GroupNorm is refused: it mixes channels, so a
    dead channel is not constant and removing any channel regroups the others.

Without a ``Net`` (a bare :class:`~subnets.graph.ChannelGraph`, so nothing is known about the
activations between layers) only channels that provably emit exactly 0 are removed: dead, every
bias of the group zero at that channel, every BatchNorm mapping 0 to 0 (zero shift and zero
``mean * scale``), every other norm with zero scale and shift.

With ``check=True`` the result is compared with the original on the probe batch and a
``RuntimeError`` names the largest difference if they disagree.

Example:
    >>> import jax, subnets
    >>> from subnets.pruning import remove_dead
    >>> net = subnets.zoo.create("dnn-s", num_classes=4)
    >>> v = net.init(jax.random.key(0))
    >>> k = v["params"]["dense0"]["kernel"]
    >>> v["params"]["dense0"]["kernel"] = k.at[:, :10].set(0.0)  # 10 dead units, biases kept
    >>> small, widths = remove_dead(v, net)
    >>> widths["h0"]
    134

References:
    Eccles et al., DNNShifter (arXiv:2309.06973), Sec. 3.2 (removal of zeroed structures).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from subnets.graph import ChannelGraph, Group, Layer, Member, Path, get_path, set_paths


def remove_dead(variables: Mapping, graph: Any, *, check: bool = True, atol: float = 1e-4,
                key: jax.Array | None = None) -> tuple[dict, dict[str, int]]:
    """Remove every dead channel that can be removed exactly; fold its constant into biases.

    Args:
        variables: sparse variables (exact zeros where pruned).
        graph: the model's ``Net`` (recommended: constants are measured and folded) or its
            bare ``ChannelGraph`` (only channels emitting exactly 0 are removed).
        check: with a ``Net``, verify the logits on the probe batch (raise if they differ).
        atol: tolerance of that check, relative to the largest logit magnitude.
        key: probe inputs' randomness (default ``jax.random.key(0)``).

    Returns:
        ``(smaller_variables, widths)``, widths of every free group.

    Raises:
        ValueError: GroupNorm, or variables that do not match the graph.
        RuntimeError: the removed model's logits differ from the original's (``check``).
    """
    net = graph if hasattr(graph, "graph") and hasattr(graph, "apply") else None
    g: ChannelGraph = net.graph if net is not None else graph
    if not isinstance(g, ChannelGraph):
        raise TypeError(f"remove_dead needs a Net or a ChannelGraph, got {type(graph).__name__}")
    g.validate(variables, widths=g.widths_of(variables))
    label = getattr(net, "name", type(net).__name__)
    mixes = any(getattr(n, "mixes_channels", False) for n in getattr(g, "norms", ()))
    if net is not None and (mixes or getattr(net, "norm", None) == "group"):
        raise ValueError(f"remove_dead: {label} uses GroupNorm, which normalises channels "
                         "together: a dead channel is not constant and removing one regroups "
                         "the rest; use norm='batch', 'instance' or 'none'")
    dead = {grp.name: _dead(variables, g, grp) for grp in g.free}
    if not any(d.any() for d in dead.values()):
        return dict(variables), g.widths_of(variables)
    key = jax.random.key(0) if key is None else key
    before = None
    if net is not None:
        probe = np.array(jax.random.normal(key, (2,) + tuple(net.input_shape), jnp.float32))
        probe[1] = probe[1] * np.float32(3.0) + np.float32(0.5)  # two clearly different inputs
        removable, folds, before = _measure(net, variables, g, dead, probe, atol)
    else:
        removable = {n: _keep_one(d & _emits_zero(variables, g[n])) for n, d in dead.items()}
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
    out_widths = g.widths_of(new)
    return new, out_widths


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


def _member(grp: Group, path: Path) -> Member:
    for m in grp.members:
        if m.path == path:
            return m
    raise ValueError(f"group {grp.name!r} has no member at {'/'.join(path)}")


def _channels_zero(a: np.ndarray, m: Member) -> np.ndarray:
    """Per channel of member ``m``: are all entries of ``a`` along the other axes zero?"""
    a = np.moveaxis(np.asarray(a), m.axis, -1)
    a = a.reshape(-1, m.spatial, a.shape[-1] // m.spatial)
    return ~np.any(a != 0, axis=(0, 1))


def _dead(variables: Mapping, g: ChannelGraph, grp: Group) -> np.ndarray:
    producers = [lay for lay in g.layers if lay.out_group == grp.name and lay.kind != "depthwise"]
    depthwise = [lay for lay in g.layers if lay.kind == "depthwise" and lay.in_group == grp.name]
    size = g.widths_of(variables)[grp.name]
    dead = np.zeros(size, bool)
    if producers:
        dead = np.ones(size, bool)
        for lay in producers:
            dead &= _channels_zero(get_path(variables, lay.path), _member(grp, lay.path))
    if depthwise:
        # All consumers read the group through its depthwise convs: zero there is dead too.
        dw_dead = np.ones(size, bool)
        for lay in depthwise:
            dw_dead &= _channels_zero(get_path(variables, lay.path), _member(grp, lay.path))
        dead |= dw_dead
    return dead


def _emits_zero(variables: Mapping, grp: Group) -> np.ndarray:
    """Channels whose every bias / norm maps a zero input to exactly zero (graph-only mode)."""
    ok = True
    norms = {m.path[:-1] for m in grp.members if m.path[-1] == "scale"}
    for m in grp.members:
        leaf = m.path[-1]
        if m.path[:-1] in norms or m.path[0] == "batch_stats" or leaf != "bias":
            continue
        ok = ok & (np.asarray(get_path(variables, m.path)) == 0)
    for norm in norms:
        scale = np.asarray(get_path(variables, norm + ("scale",)))
        shift = np.asarray(get_path(variables, norm + ("bias",)))
        stats = ("batch_stats",) + norm[1:]
        try:
            mean = np.asarray(get_path(variables, stats + ("mean",)))
            ok = ok & (shift == 0) & (mean * scale == 0)
        except KeyError:
            ok = ok & (shift == 0) & (scale == 0)
    return np.asarray(ok, bool)


def _capture(net: Any, variables: Mapping, probe: np.ndarray,
             paths: set[Path]) -> tuple[dict, np.ndarray]:
    """Inputs and (unbound) modules of the layers at ``paths``, and the logits, from one pass."""
    if not hasattr(net, "build"):
        # Any model (Linen, NNX, graph-only): the layers' inputs read off apply's jaxpr; the
        # layer geometry then comes from the graph (module None).
        from subnets.models.capture import layer_inputs

        inputs, logits = layer_inputs(net, variables, probe, paths)
        return {p: (a, None) for p, a in inputs.items()}, logits
    seen: dict[Path, tuple[jax.Array, nn.Module]] = {}

    def interceptor(next_fun, args, kwargs, context):
        path = ("params",) + tuple(context.module.scope.path) + ("kernel",)
        if context.method_name == "__call__" and path in paths and path not in seen:
            seen[path] = (args[0], context.module.clone(parent=None))
        return next_fun(*args, **kwargs)

    module = net.build(net.graph.widths_of(variables))  # the module net.apply runs

    def run(v, x):
        with nn.intercept_methods(interceptor):
            logits = module.apply(v, x, train=False)
        return {p: inp for p, (inp, _) in seen.items()}, logits

    # Traced once: the interceptor records modules at trace time, the inputs come back as
    # outputs of one compiled program (eager Flax would compile op by op).
    inputs, logits = jax.jit(run)(variables, probe)
    found = {p: (inputs[p], mod) for p, (_, mod) in seen.items()}
    missing = paths - set(found)
    if missing:
        raise ValueError(f"remove_dead: layers {sorted('/'.join(p) for p in missing)} were not "
                         "called as modules named like their kernel paths")
    return found, np.asarray(logits)


def _close(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    scale = max(1.0, float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
    return bool(np.all(np.abs(a - b) <= atol * 1e-2 * scale))


def _measure(net: Any, variables: Mapping, g: ChannelGraph, dead: Mapping[str, np.ndarray],
             probe: np.ndarray, atol: float) -> tuple[dict, dict, np.ndarray]:
    """Which dead channels fold exactly, the bias change of each consumer, and the logits."""
    consumers = {name: [lay for lay in g.layers if lay.in_group == name
                        and lay.kind != "depthwise"] for name, d in dead.items() if d.any()}
    paths = {lay.path for lays in consumers.values() for lay in lays}
    seen, logits = _capture(net, variables, probe, paths)
    removable = {name: np.zeros_like(d) for name, d in dead.items()}
    folds: dict[Path, np.ndarray] = {}
    for name, lays in consumers.items():
        rm = dead[name].copy()
        pending: list[tuple[Layer, np.ndarray, np.ndarray]] = []
        for lay in lays:
            x, module = seen[lay.path]
            m = _member(g[name], lay.path)
            ok, delta = _consumer_fold(variables, lay, m, np.asarray(x), module, rm, atol)
            rm &= ok
            pending.append((lay, delta, ok))
        rm = _keep_one(rm)
        removable[name] = rm
        for lay, delta, _ in pending:
            bias_path = lay.path[:-1] + ("bias",)
            total = delta[rm].sum(axis=0) if rm.any() else 0.0
            if np.any(total != 0):
                folds[bias_path] = folds.get(bias_path, 0.0) + total
    return removable, folds, logits


def _consumer_fold(variables: Mapping, lay: Layer, m: Member, x: np.ndarray, module: nn.Module,
                   candidates: np.ndarray, atol: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: can it be removed at this consumer, and its contribution to the bias."""
    size = candidates.size
    xs = x.reshape(x.shape[0], -1, m.spatial * size).reshape(x.shape[0], -1, size)
    params = dict(get_path(variables, lay.path[:-1]))
    has_bias = "bias" in params
    out_dim = np.shape(params["kernel"])[-1]
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
    kernel = np.asarray(params["kernel"])
    if needs and kernel.ndim == 2:
        # Dense (also after a flatten): the constants times their kernel rows, summed.
        rows = kernel.reshape(m.spatial, size, out_dim)
        for c in needs:
            ok[c] = True
            delta[c] = xs[0, :, c] @ rows[:, c, :]
        needs = []
    pad = getattr(module, "padding", None)
    pad = pad.upper() if isinstance(pad, str) else None
    if module is None and kernel.ndim >= 3:  # geometry from the traced graph's layer
        padding = getattr(lay, "padding", None)
        if padding is not None and len(padding) == kernel.ndim - 2:
            pad = "VALID" if all(lo == 0 and hi == 0 for lo, hi in padding) else "SAME"
    groups = getattr(lay, "feature_groups", 1) if module is None else getattr(
        module, "feature_group_count", 1)
    plain = groups == 1 and kernel.ndim >= 3
    one_by_one = all(k == 1 for k in kernel.shape[:-2])
    rest = []
    for c in needs:
        taps = kernel[..., c, :].reshape(-1, out_dim)
        constant = _close(xs[0, :, c], np.broadcast_to(xs[0, :1, c], xs[0, :, c].shape), atol)
        if plain and constant and (pad == "VALID" or (one_by_one and pad == "SAME")):
            # Every output position reads the constant through every tap: no padding involved.
            ok[c] = True
            delta[c] = xs[0, 0, c] * taps.sum(axis=0)
        elif plain and pad == "SAME" and not np.any(taps):
            ok[c] = True  # the layer ignores the channel
        elif plain and pad == "SAME" and constant:
            continue  # zero padding makes the border positions see less of the constant
        else:
            rest.append(c)
    needs = rest
    if needs and module is None:
        needs = []  # no module to push the constant through: those channels are kept
    if needs:
        # Any other layer: push each channel's constant alone through it (bias zeroed) and see
        # whether its contribution is the same at every output position (VALID: yes; SAME:
        # no, the zero padding reaches the borders).
        z = np.zeros((len(needs),) + x.shape[1:], x.dtype)
        zs = z.reshape(len(needs), -1, size)
        for i, c in enumerate(needs):
            zs[i, :, c] = xs[0, :, c]
        zero_bias = {**params, "bias": jnp.zeros_like(params["bias"])}
        y = np.asarray(jax.jit(module.apply)({"params": zero_bias}, jnp.asarray(z)))
        y = y.reshape(len(needs), -1, y.shape[-1])
        for i, c in enumerate(needs):
            if _close(y[i], np.broadcast_to(y[i, :1], y[i].shape), atol):
                ok[c] = True
                delta[c] = y[i, 0]
    return ok, delta


def _fold(variables: Mapping, folds: Mapping[Path, Any]) -> dict[Path, np.ndarray]:
    """The consumers' biases plus their folded constants, as NumPy arrays of the bias dtype."""
    updates = {}
    for p, d in folds.items():
        b = np.asarray(get_path(variables, p))
        updates[p] = (b + d).astype(b.dtype)
    return updates
