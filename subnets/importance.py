"""Importance of every channel: first-order Taylor, L1 norm, random; the permutation they imply.

A channel's *incoming* weights are the members of its group that produce it: the output-axis
slice of every kernel whose layer writes the group (several for a residual stream, plus a
depthwise conv's channel axis), and the group's bias and norm scale/shift. Consumer members (the
next layer's input axis) and running statistics are not incoming. Every scorer returns one
``np.float64`` vector per free group, in the group's current channel order.

Example:
    >>> import jax, numpy as np, subnets
    >>> from subnets import importance
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> v = net.init(jax.random.key(0))
    >>> x = np.ones((4, 8), np.float32); y = np.zeros(4, np.int32)
    >>> scores = importance.taylor(net, v, [(x, y)])
    >>> sorted(scores), scores["h0"].shape
    (['h0', 'h1', 'h2'], (144,))
    >>> perms = importance.permutation(scores)
    >>> bool(np.all(np.diff(scores["h0"][perms["h0"]]) <= 0))
    True

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.1-3.2; Molchanov et al., Importance
    Estimation for Neural Network Pruning (CVPR 2019) for the first-order Taylor criterion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from subnets._order import as_graph, graph_first
from subnets.graph import ChannelGraph, Group, Member, Path, get_path, set_paths, unview, view

Scores = dict[str, np.ndarray]

#: Per-weight criteria (pruning at init, Reconvene, ``subnets prune --pai-score``); higher =
#: keep. SNIP's connection sensitivity and the per-weight first-order Taylor saliency are the
#: same quantity, so ``taylor`` is an alias of ``snip`` here.
WEIGHT_CRITERIA: dict[str, str] = {
    "magnitude": "|w|",
    "random": "uniform noise (the baseline every PaI paper reports)",
    "snip": "|w * g|, g the loss gradient on one batch (Lee et al., SNIP)",
    "taylor": "the same |w * g| as snip (first-order Taylor saliency)",
    "grasp": "w * Hg, the Hessian-gradient product (Wang et al., GraSP)",
    "synflow": "|w| * dR/d|w|, data-free, iterated (Tanaka et al., SynFlow)",
}
WEIGHT_ALIASES = {"taylor": "snip"}

#: Per-unit (channel) criteria (REDS nesting, ``subnets nest --score``).
UNIT_CRITERIA: dict[str, str] = {
    "taylor": "sum of |w * g| over a unit's incoming weights (:func:`taylor`)",
    "l1": "L1 norm of a unit's incoming kernel weights (:func:`l1`)",
    "l1_bn": "L1 with the BatchNorm gain folded into the kernel (:func:`l1`, fold_norm)",
    "random": "uniform noise (:func:`random`)",
}


#: Member roles that carry a channel's incoming weights: the producing kernels' output axes
#: (a depthwise conv's channel axis included), the bias, the norm's gain and offset.
INCOMING_ROLES = ("out", "depthwise", "bias", "scale", "shift")
#: Of those, the kernels' own axes (what :func:`l1` sums).
KERNEL_ROLES = ("out", "depthwise")


def incoming_members(graph: ChannelGraph, group: Group, variables: Mapping | None = None
                     ) -> list[Member]:
    """The members of ``group`` that carry its channels' incoming weights.

    Read from the members' roles (:data:`INCOMING_ROLES`): the output axis of every layer
    writing the group, a depthwise conv's channel axis, biases and norm scale/shift. Consumer
    axes (role ``in``) and running statistics (``mean``/``var``) are not incoming.
    ``variables`` is accepted for backward compatibility and not read.
    """
    del graph, variables
    return [m for m in group.members if m.role in INCOMING_ROLES]


def _reduce(arr: np.ndarray, m: Member, size: int) -> np.ndarray:
    """Sum ``arr`` over everything but member ``m``'s channel axis."""
    v = view(arr, m, size)
    axes = tuple(i for i in range(v.ndim) if i != m.axis + 1)
    return v.sum(axis=axes)


def _group_scores(graph: ChannelGraph, variables: Mapping, values: Mapping,
                  kernels_only: bool = False) -> Scores:
    """Per free group, the sum over incoming members of ``values`` (a tree like variables)."""
    roles = KERNEL_ROLES if kernels_only else INCOMING_ROLES
    out = {}
    for g in graph.free:
        total = np.zeros(g.size, np.float64)
        for m in graph.members(g.name, *roles):
            total += _reduce(np.asarray(get_path(values, m.path), np.float64), m, g.size)
        out[g.name] = total
    return out


def from_saliency(graph: ChannelGraph, variables: Mapping, saliency_tree: Mapping) -> Scores:
    """Unit scores from a per-weight :func:`saliency` tree (what :func:`taylor` returns)."""
    return _group_scores(graph, variables, saliency_tree)


def _default_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    from subnets.train import cross_entropy

    return cross_entropy(logits, labels)


def gradients(net: Any, variables: Mapping, batches: Iterable[tuple[Any, Any]], *,
              loss_fn: Callable | None = None) -> dict:
    """The gradient of the loss w.r.t. ``params``, summed over ``batches`` (eval mode).

    Eval mode (running BatchNorm statistics) makes the score a property of the deployed
    function rather than of one batch's statistics.

    Raises:
        ValueError: ``batches`` is empty (a zero gradient would rank channels arbitrarily).
    """
    loss_fn = loss_fn or _default_loss

    @jax.jit
    def grad(params, rest, x, y):
        return jax.grad(lambda p: loss_fn(net.apply({**rest, "params": p}, x), y))(params)

    rest = {k: v for k, v in variables.items() if k != "params"}
    total, count = None, 0
    for x, y in batches:
        g = grad(variables["params"], rest, jnp.asarray(x), jnp.asarray(y))
        total = g if total is None else jax.tree.map(jnp.add, total, g)
        count += 1
    if count == 0:
        raise ValueError("importance: batches is empty; give at least one (x, y) batch")
    return jax.tree.map(lambda a: np.asarray(a, np.float64), total)


def saliency(net: Any, variables: Mapping, batches: Iterable[tuple[Any, Any]], *,
             loss_fn: Callable | None = None) -> dict:
    """``{"params": |w * g|}``, g the summed gradient: the per-weight Taylor saliency."""
    grads = gradients(net, variables, batches, loss_fn=loss_fn)
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    return {"params": jax.tree.map(lambda w, g: np.abs(w * g), params, grads)}


def taylor(net: Any, variables: Mapping, batches: Iterable[tuple[Any, Any]], *,
           loss_fn: Callable | None = None) -> Scores:
    """First-order Taylor importance: per channel, the sum of ``|w * g|`` over incoming weights.

    Args:
        net: a zoo net (``apply``, ``graph``).
        variables: its variables.
        batches: ``(x, y)`` pairs; the gradient is summed over all of them (REDS uses ~100).
        loss_fn: ``loss_fn(logits, labels) -> scalar`` (default: mean cross-entropy).

    Returns:
        ``{group: float64 vector of the group's size}`` for every free group. A residual
        stream's score sums over every layer that writes it.

    Example:
        >>> import jax, numpy as np, subnets
        >>> net = subnets.zoo.create("dnn-s", num_classes=2, input_shape=(4,))
        >>> v = net.init(jax.random.key(0))
        >>> s = taylor(net, v, [(np.ones((2, 4), np.float32), np.array([0, 1]))])
        >>> bool((s["h1"] >= 0).all())
        True

    References:
        Corti et al., REDS (arXiv:2311.13349), Sec. 3.2.
    """
    return from_saliency(net.graph, variables, saliency(net, variables, batches, loss_fn=loss_fn))


def l1(graph: ChannelGraph | Any, variables: Mapping, *, fold_norm: bool = False) -> Scores:
    """L1 norm of each channel's incoming kernel weights (the REDS "L1 order" baseline).

    Raw norms; pass them through :func:`normalize` before a knapsack across layers (the
    ``nest`` pipeline does).

    A BatchNorm that follows a layer divides out the scale of its kernel, so under BatchNorm the
    raw L1 norm says little about a channel (training moves it freely). ``fold_norm=True`` scores
    the kernel as deployed instead, with the eval-mode norm folded in: the kernel of every layer
    writing the group is multiplied per channel by ``|scale| / sqrt(var + epsilon)`` of the norm
    the graph records directly after that layer (:meth:`ChannelGraph.norm_of`, with that norm's
    own epsilon). Layers with no norm right after them (e.g. a residual stream's writers, whose
    sum is normalised later), and norms that compute statistics from the batch (GroupNorm,
    InstanceNorm: they cannot be folded) stay raw.

    Args:
        graph: the channel graph, or a model with one (graph first; the old
            ``l1(variables, graph)`` order still works with a DeprecationWarning).
        variables: the variables.
        fold_norm: fold each producing layer's running-statistics norm into its kernel.

    Returns:
        ``{group: float64 vector}`` for every free group.

    Example:
        >>> import jax, subnets
        >>> net = subnets.zoo.create("dnn-s", num_classes=2, input_shape=(4,))
        >>> v = net.init(jax.random.key(0))
        >>> l1(net.graph, v)["h0"].shape
        (144,)
        >>> net = subnets.zoo.create("dnn-s", num_classes=2, input_shape=(4,), norm="batch")
        >>> v = net.init(jax.random.key(0))
        >>> v["params"]["norm0"]["scale"] = v["params"]["norm0"]["scale"].at[3].set(0.0)
        >>> float(l1(net, v, fold_norm=True)["h0"][3]), bool(l1(net, v)["h0"][3] > 0)
        (0.0, True)

    References:
        Corti et al., REDS (arXiv:2311.13349), Sec. 4; Li et al., Pruning Filters for
        Efficient ConvNets (ICLR 2017); Liu et al., Network Slimming (ICCV 2017) for
        BatchNorm scales as channel importance.
    """
    graph, variables = graph_first(graph, variables, "importance.l1")
    graph = as_graph(graph)
    paths = {m.path for g in graph.free for m in graph.members(g.name, *KERNEL_ROLES)}
    absolute = _abs_tree(variables, paths)
    if fold_norm:
        absolute = _fold_norms(graph, variables, absolute)
    return _group_scores(graph, variables, absolute, kernels_only=True)


def _abs_tree(variables: Mapping, paths: set[Path]) -> dict:
    """A tree holding ``|a|`` (float64) at each of ``paths`` (nothing else)."""
    out: dict = {}
    for p in sorted(paths):
        node = out
        for k in p[:-1]:
            node = node.setdefault(k, {})
        node[p[-1]] = np.abs(np.asarray(get_path(variables, p), np.float64))
    return out


def _fold_norms(graph: ChannelGraph, variables: Mapping, absolute: Mapping) -> dict:
    """``absolute`` with every producing kernel scaled by the gain of the norm right after it."""
    updates = {}
    for g in graph.free:
        for m in graph.members(g.name, *KERNEL_ROLES):
            if m.layer is None or m.path in updates:
                continue
            norm = graph.norm_of(m.layer)
            if norm is None or norm.var is None or norm.mixes_channels:
                continue  # no norm, or statistics from the batch: nothing fixed to fold
            var = np.asarray(get_path(variables, norm.var), np.float64)
            scale = (np.ones_like(var) if norm.scale is None
                     else np.abs(np.asarray(get_path(variables, norm.scale), np.float64)))
            gain = scale / np.sqrt(var + float(norm.epsilon))
            a = view(get_path(absolute, m.path), m, g.size)
            shape = [1] * a.ndim
            shape[m.axis + 1] = g.size
            updates[m.path] = unview(a * gain.reshape(shape), m)
    return set_paths(absolute, updates) if updates else dict(absolute)


def normalize(scores: Mapping[str, Any]) -> Scores:
    """Each group's scores divided by their mean, so that every group's units average 1.

    A knapsack over several layers adds scores ACROSS groups, which is only meaningful when
    they share a unit. Taylor scores do (each estimates a change of the loss) and random scores
    do by construction; weight norms do not: with BatchNorm after a layer its kernel's scale is
    arbitrary (the norm divides it out), and a stem with 9 inputs per filter has smaller norms
    than a pointwise layer with 64. Raw L1 scores in the knapsack starve whole layers (DS-CNN-S
    at 25% MACs kept 8 and 4 of 64 channels in two layers and lost 3.4 points to random order).
    Normalising keeps the L1 ORDER inside each group and compares layers by relative magnitude.
    A group whose scores are all zero is returned unchanged.

    Example:
        >>> import numpy as np
        >>> out = normalize({"a": np.array([1.0, 3.0]), "b": np.array([10.0, 30.0])})
        >>> out["a"].tolist(), out["b"].tolist()
        ([0.5, 1.5], [0.5, 1.5])

    References:
        Li et al., Pruning Filters for Efficient ConvNets (ICLR 2017), which ranks by L1 norm
        only within a layer.
    """
    out = {}
    for g, s in scores.items():
        s = np.asarray(s, np.float64)
        mean = float(s.mean()) if s.size else 0.0
        out[g] = s / mean if mean > 0 else s.copy()
    return out


def random(graph: ChannelGraph | Any, *, key: jax.Array) -> Scores:
    """Uniform random scores: the REDS "random order" baseline.

    ``graph`` is a ChannelGraph or a model with one.

    Example:
        >>> import jax, subnets
        >>> net = subnets.zoo.create("dnn-s", num_classes=2, input_shape=(4,))
        >>> random(net.graph, key=jax.random.key(0))["h2"].dtype
        dtype('float64')

    References:
        Corti et al., REDS (arXiv:2311.13349), Sec. 4.
    """
    graph = as_graph(graph) or graph
    keys = jax.random.split(key, len(graph.free))
    return {g.name: np.asarray(jax.random.uniform(k, (g.size,)), np.float64)
            for g, k in zip(graph.free, keys, strict=True)}


def permutation(scores: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{group: indices sorting the scores in descending order}`` for :func:`subnets.permute`.

    Ties keep their original order (a stable sort), so equal scores never reorder channels
    and the permutation is the same on every platform.

    Example:
        >>> permutation({"h": [0.1, 0.5, 0.1, 0.9]})["h"].tolist()
        [3, 1, 0, 2]
    """
    return {name: np.argsort(-np.asarray(s, np.float64), kind="stable")
            for name, s in scores.items()}


def permute_scores(scores: Mapping[str, Any], perms: Mapping[str, Any]) -> Scores:
    """Scores in the permuted channel order (``scores[g][perms[g]]``)."""
    return {name: np.asarray(s)[np.asarray(perms[name])] if name in perms else np.asarray(s)
            for name, s in scores.items()}


def kernel_scores(net: Any, variables: Mapping, batches: Iterable[tuple[Any, Any]] | None = None,
                  *, loss_fn: Callable | None = None, saliency_tree: Mapping | None = None,
                  kinds: tuple[str, ...] = ("conv",), pointwise_only: bool = True,
                  ) -> dict[Path, np.ndarray]:
    """Per-kernel Taylor scores ``|w * g|`` of each (pointwise) layer: input x output channel.

    This is the value of the REDS generalised DS-CNN knapsack, where a pointwise layer's value
    counts every kept kernel (kept filter x kept input channel). With the channels permuted,
    the value of widths ``(w_in, w_out)`` is ``S[:w_in, :w_out].sum()``, a 2-D prefix sum;
    this is the ``kernel_scores`` argument of :func:`subnets.nested.select_widths`.

    Args:
        net: a zoo net.
        variables: its variables (score the permuted variables to get permuted matrices).
        batches: ``(x, y)`` pairs for the gradient; or give ``saliency_tree`` instead.
        loss_fn: as in :func:`taylor`.
        saliency_tree: a precomputed :func:`saliency` result (saves a second gradient pass).
        kinds: layer kinds to include.
        pointwise_only: keep only 1x1 convs (``window == 1``); False adds every conv/dense
            layer listed in ``kinds``, summed over its spatial window.

    Returns:
        ``{kernel path: float64 array (in channels, out channels)}`` (axes found from the
        layer's ``in`` and ``out`` members; spatial window and flattened positions summed), in
        the graph's layer order.
        ``S.sum(axis=0)`` is that layer's contribution to the output group's :func:`taylor`
        score.

    References:
        Corti et al., REDS (arXiv:2311.13349), Sec. 3.3.1 (DS-CNN generalised knapsack).
    """
    if saliency_tree is None:
        if batches is None:
            raise ValueError("kernel_scores needs batches or saliency_tree")
        saliency_tree = saliency(net, variables, batches, loss_fn=loss_fn)
    graph = net.graph
    out = {}
    for layer in graph.layers:
        if layer.kind not in kinds or (pointwise_only and layer.window != 1):
            continue
        m_in = _member_of(graph, layer.in_group, layer.path, "in")
        m_out = _member_of(graph, layer.out_group, layer.path, "out")
        if m_in is None or m_out is None:
            continue  # a depthwise layer has no separate input axis
        s = np.asarray(get_path(saliency_tree, layer.path), np.float64)
        s = view(s, m_in, s.shape[m_in.axis] // m_in.spatial)
        o = m_out.axis + (1 if m_out.axis > m_in.axis else 0)
        s = np.moveaxis(s, (m_in.axis + 1, o), (0, 1))
        out[layer.path] = s.reshape(s.shape[0], s.shape[1], -1).sum(axis=-1)
    return out


def _member_of(graph: ChannelGraph, group: str, path: Path, role: str) -> Member | None:
    """The member of ``group`` at ``path`` with ``role`` (the layer's input/output axis)."""
    for m in graph.members(group, role):
        if m.path == tuple(path):
            return m
    return None
