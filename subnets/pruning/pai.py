"""Pruning at initialisation: score every prunable weight once, keep the top fraction.

Five criteria (and one alias), all "higher score = keep":

- ``magnitude``: ``|w|``.
- ``random``: uniform noise (the baseline every PaI paper reports).
- ``snip``: connection sensitivity ``|g * w|``, ``g`` the loss gradient on one batch
  (``taylor`` names the same per-weight saliency; the registry is
  :data:`subnets.importance.WEIGHT_CRITERIA`).
- ``grasp``: ``w * (H g)``, the Hessian-gradient product obtained as ``jax.jvp`` of the gradient
  in the direction of the (stopped) gradient, with the logits divided by a temperature (200).
  Keeping the largest ``w * Hg`` is removing the largest ``-w * Hg``, as GraSP prescribes.
- ``synflow``: data-free synaptic flow ``|w| * dR/d|w|``, ``R`` the sum of the outputs of the
  linearised network (all weights replaced by ``|w|``, biases and norm shifts removed, BatchNorm
  made the identity) on an all-ones input. Iterated over ``rounds`` (100) with the exponential
  schedule ``density ** (k / rounds)``, each round scoring the network already masked.
  With GroupNorm/InstanceNorm the linearised net still normalises, so it is not homogeneous
  and SynFlow's conservation law does not hold (the ranking is still defined).

:func:`scores` gives one round of scores, :func:`pai_masks` turns scores into masks at a density
(exact count, global or per layer), and :func:`prune_at_init` does both, iterating for SynFlow.

Example:
    >>> import jax, jax.numpy as jnp, subnets
    >>> from subnets.pruning.pai import prune_at_init
    >>> net = subnets.zoo.create("dnn-s", num_classes=4)
    >>> v = net.init(jax.random.key(0))
    >>> x, y = jnp.ones((8, 250)), jnp.zeros(8, jnp.int32)
    >>> m = prune_at_init(net, v, x, y, density=0.1, method="snip", key=jax.random.key(1))
    >>> n = sum(a.size for a in m.values())
    >>> int(sum(a.sum() for a in m.values())) == round(0.1 * n)
    True

References:
    Lee et al., SNIP (ICLR 2019); Wang et al., GraSP (ICLR 2020); Tanaka et al., SynFlow
    (NeurIPS 2020); Eccles et al., Reconvene (arXiv:2404.16877), which prunes at init first.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from subnets.graph import ChannelGraph, Path, get_path, leaf_paths, set_paths
from subnets.importance import KERNEL_ROLES, WEIGHT_ALIASES, WEIGHT_CRITERIA
from subnets.pruning.scoring import DEFAULT_FLOOR, Floor, keep_masks, out_axes
from subnets.transforms import prunable_paths

Masks = dict[Path, jax.Array]
Scores = dict[Path, jax.Array]

METHODS = tuple(WEIGHT_CRITERIA)  # the one registry: subnets.importance.WEIGHT_CRITERIA
GRASP_TEMPERATURE = 200.0


def _prunable(net: Any, variables: Mapping, prunable: Iterable[Path] | None) -> list[Path]:
    paths = prunable_paths(net.graph) if prunable is None else [tuple(p) for p in prunable]
    if not paths:
        raise ValueError("no prunable kernels: pass `prunable` or a net whose graph has layers")
    for p in paths:
        get_path(variables, p)  # KeyError naming the missing path
    return paths


def _masked(variables: Mapping, masks: Mapping[Path, Any]) -> dict:
    """The variables with every masked kernel zeroed where its keep-mask is False (numpy)."""
    updates = {}
    for p, m in masks.items():
        w = np.asarray(get_path(variables, p))
        if tuple(np.shape(m)) != w.shape:
            raise ValueError(f"mask for {'/'.join(p)} has shape {tuple(np.shape(m))}, kernel "
                             f"has {w.shape}")
        updates[p] = np.where(np.asarray(m, bool), w, np.zeros((), w.dtype))
    return set_paths(variables, updates)


def _kernels(variables: Mapping, paths: tuple[Path, ...]) -> dict:
    # String keys keep the dict a plain pytree for jax.grad/jvp.
    return {"/".join(p): jnp.asarray(get_path(variables, p)) for p in paths}


@functools.lru_cache(maxsize=32)
def _score_fn(net: Any, paths: tuple[Path, ...], method: str, train: bool):
    """A jitted ``(variables, x, y) -> {name: score}`` (cached: SynFlow calls it 100 times)."""

    def with_kernels(variables, kernels):
        # jax sorts dict keys when it flattens, so match kernels by name, never by order.
        return set_paths(variables, {p: kernels["/".join(p)] for p in paths})

    def loss(kernels, variables, x, y, temperature):
        logits = net.apply(with_kernels(variables, kernels), x, train=train) / temperature
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def fn(variables, x, y):
        k = _kernels(variables, paths)
        if method == "synflow":
            ones = jnp.ones((1,) + tuple(net.input_shape), jnp.float32)
            g = jax.grad(lambda kk: jnp.sum(net.apply(with_kernels(variables, kk), ones)))(k)
            return {n: jnp.abs(g[n] * k[n]) for n in k}
        if method == "snip":
            g = jax.grad(loss)(k, variables, x, y, 1.0)
            return {n: jnp.abs(g[n] * k[n]) for n in k}
        grad = functools.partial(jax.grad(loss), variables=variables, x=x, y=y,
                                 temperature=GRASP_TEMPERATURE)
        g = jax.lax.stop_gradient(grad(k))
        _, hg = jax.jvp(grad, (k,), (g,))
        out = {n: hg[n] * k[n] for n in k}
        total = jnp.abs(sum(jnp.sum(s) for s in out.values())) + 1e-12
        return {n: s / total for n, s in out.items()}

    return jax.jit(fn)


def _linearised(graph: ChannelGraph, variables: Mapping, paths: list[Path]) -> dict:
    """|kernels| (each rescaled to unit average gain), biases and shifts 0, norms identity.

    Roles come from the graph: every layer's kernel becomes ``|w|``; each norm's scale and
    running variance become 1 and its running mean 0; every other array (biases, norm shifts,
    anything the graph does not name) becomes 0.

    The linearised net is positively homogeneous of degree one in every kernel, so a
    per-kernel scale multiplies every SynFlow score by the same constant and leaves the
    ranking unchanged; we choose it so R stays near 1 instead of overflowing float32 in deep
    nets (the SynFlow code runs in float64 for the same reason).
    """
    kernel_set = set(paths)
    kernels = {layer.path for layer in graph.layers} | kernel_set
    ones = {p for n in graph.norms for p in (n.scale, n.var) if p is not None}
    updates = {}
    for p, leaf in leaf_paths(variables):
        a = np.asarray(leaf, np.float32)
        if p in kernel_set:
            a = np.abs(a)
            fan_in = _fan_in(graph, p, a.shape)
            updates[p] = a / max(float(np.mean(a)) * fan_in, 1e-30)
        elif p in kernels:
            updates[p] = np.abs(a)
        elif p in ones:
            updates[p] = np.ones_like(a)
        else:
            updates[p] = np.zeros_like(a)
    return set_paths(variables, updates)


def _fan_in(graph: ChannelGraph, path: Path, shape: tuple[int, ...]) -> int:
    """Weights per output channel of the kernel at ``path`` (its ``out``/``depthwise`` axis).

    Any positive per-kernel constant leaves the SynFlow ranking unchanged; for a kernel the
    graph does not describe, the kernel's size is used.
    """
    size = math.prod(shape)
    for g in graph.groups:
        for m in g.members:
            if m.path == path and m.role in KERNEL_ROLES:
                return max(1, size // shape[m.axis])
    return max(1, size)


def scores(net: Any, variables: Mapping, x: Any = None, y: Any = None, *,
           method: str = "magnitude", key: jax.Array | None = None,
           prunable: Iterable[Path] | None = None, masks: Mapping[Path, Any] | None = None,
           train: bool = False) -> Scores:
    """One round of pruning-at-initialisation scores for every prunable kernel.

    Args:
        net: a model (``apply``, ``graph``, ``input_shape``: a zoo model, or any Flax model
            through :func:`subnets.models.from_linen` / :func:`~subnets.models.from_nnx`).
        variables: its (freshly initialised) variables.
        x, y: one batch of inputs and integer labels (``snip`` and ``grasp`` only; ``synflow``
            is data-free and the others ignore data).
        method: one of :data:`METHODS`.
        key: ``jax.random.key``; required for ``random``.
        prunable: kernel paths to score (default: every layer of ``net.graph``).
        masks: weights already pruned: the network is scored with them zeroed and their
            scores are ``-inf``, so no criterion (GraSP's are signed) can revive them.
        train: run BatchNorm on batch statistics (default: running averages, as the SynFlow
            reference code scores in eval mode).

    Returns:
        ``{path: float32 numpy array shaped like the kernel}``; larger means more worth keeping.

    Example:
        >>> import jax, subnets
        >>> net = subnets.zoo.create("dnn-s", num_classes=4)
        >>> s = scores(net, net.init(jax.random.key(0)), method="synflow")
        >>> sorted("/".join(p) for p in s)[0]
        'params/dense0/kernel'

    References:
        Lee et al., SNIP (ICLR 2019); Wang et al., GraSP (ICLR 2020); Tanaka et al., SynFlow
        (NeurIPS 2020).
    """
    if method not in METHODS:
        raise ValueError(f"unknown PaI score {method!r}; choose one of {METHODS}")
    method = WEIGHT_ALIASES.get(method, method)
    paths = _prunable(net, variables, prunable)
    if masks:
        variables = _masked(variables, {p: m for p, m in masks.items() if p in set(paths)})
    if method == "magnitude":
        # numpy, not eager jnp: each distinct kernel shape would cost an XLA compilation.
        out = {p: np.abs(np.asarray(get_path(variables, p), np.float32)) for p in paths}
    elif method == "random":
        if key is None:
            raise ValueError("method='random' needs key=jax.random.key(...)")
        sizes = [int(np.size(get_path(variables, p))) for p in paths]
        flat = np.asarray(jax.random.uniform(key, (sum(sizes),)))
        starts = np.cumsum([0] + sizes)
        out = {p: flat[a:b].reshape(np.shape(get_path(variables, p)))
               for p, a, b in zip(paths, starts[:-1], starts[1:], strict=True)}
    elif method == "synflow":
        lin = _linearised(net.graph, variables, paths)
        g = _score_fn(net, tuple(paths), method, False)(lin, None, None)
        out = {p: g["/".join(p)] for p in paths}
    else:
        if x is None or y is None:
            raise ValueError(f"method={method!r} needs a batch: pass x and y")
        g = _score_fn(net, tuple(paths), method, bool(train))(
            variables, jnp.asarray(x), jnp.asarray(y, jnp.int32))
        out = {p: g["/".join(p)] for p in paths}
    if masks:
        # A pruned weight stays pruned: -inf sorts it last whatever the criterion's sign.
        out = {p: np.where(np.asarray(masks[p]), s, -np.inf) if p in masks else s
               for p, s in out.items()}
    return {p: np.asarray(s, np.float32) for p, s in out.items()}


def pai_masks(scores: Mapping[Path, Any], density: float, *, scope: str = "global",
              floor: Floor | None = DEFAULT_FLOOR, warn: bool = True,
              axes: Mapping[Path, int] | None = None) -> Masks:
    """Keep-masks holding exactly ``max(1, round(density * n))`` weights.

    Args:
        scores: ``{path: score array}`` from :func:`scores`.
        density: fraction of weights kept, in (0, 1].
        scope: ``"global"`` (one ranking over all layers, so layers end at different
            densities: what Reconvene's sensitivity evaluator reads) or ``"layer"`` (each
            layer keeps ``density`` of its own weights).
        floor: the per-layer collapse guard of :func:`~subnets.pruning.scoring.keep_masks`
            (None: a pure global ranking).
        warn: warn about layers pruned past the collapse threshold.
        axes: ``{path: output-channel axis}`` for the floor
            (:func:`~subnets.pruning.scoring.out_axes`; default the last axis).

    Returns:
        ``{path: bool numpy array}``.

    Example:
        >>> import numpy as np
        >>> s = {("a",): np.array([0., 10., 20., 30.]), ("b",): np.arange(6.)}
        >>> m = pai_masks(s, 0.5, floor=None)
        >>> [int(v.sum()) for v in m.values()]
        [3, 2]
    """
    if not 0.0 < float(density) <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if not scores:
        raise ValueError("pai_masks: no scores given")
    if scope == "layer":
        k = {p: max(1, round(density * np.size(s))) for p, s in scores.items()}
    else:
        k = max(1, round(density * sum(int(np.size(s)) for s in scores.values())))
    return keep_masks(scores, k, scope=scope, floor=floor, warn=warn, axes=axes)


def prune_at_init(net: Any, variables: Mapping, x: Any = None, y: Any = None, *,
                  density: float, method: str = "synflow", scope: str = "global",
                  rounds: int | None = None, key: jax.Array | None = None,
                  prunable: Iterable[Path] | None = None, train: bool = False,
                  floor: Floor | None = DEFAULT_FLOOR) -> Masks:
    """Score and mask at a target density; SynFlow iterates, the others score once.

    Args:
        net, variables, x, y, method, key, prunable, train: as in :func:`scores`.
        density: fraction of prunable weights kept.
        scope: ``"global"`` or ``"layer"`` (see :func:`pai_masks`).
        rounds: pruning rounds with the exponential schedule ``density ** (r / rounds)``
            (default 100 for SynFlow, whose paper shows iteration avoids layer collapse, and 1
            otherwise).
        floor: the per-layer collapse guard (None: off); see :mod:`subnets.pruning.scoring`.

    Returns:
        ``{path: bool array}`` keeping ``round(density * n)`` weights.

    References:
        Tanaka et al., SynFlow (NeurIPS 2020), Algorithm 1.
    """
    rounds = (100 if method == "synflow" else 1) if rounds is None else int(rounds)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    masks: Masks | None = None
    axes = out_axes(net.graph, _prunable(net, variables, prunable))
    for r in range(1, rounds + 1):
        s = scores(net, variables, x, y, method=method, key=key, prunable=prunable,
                   masks=masks, train=train)
        masks = pai_masks(s, density ** (r / rounds), scope=scope, floor=floor,
                          warn=r == rounds, axes=axes)
    return masks


def layer_density(masks: Mapping[Path, Any]) -> dict[Path, float]:
    """Fraction of weights each mask keeps."""
    return {p: float(np.mean(np.asarray(m))) for p, m in masks.items()}
