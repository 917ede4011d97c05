"""Compressible subspaces of weights: a point, or a line whose two ends trade accuracy for cost.

A :class:`Subspace` holds ``base`` (a full variables tree) and ``end`` (the alpha = 1 endpoint of
the *line leaves* only, same nesting; empty for a point). The weights at ``alpha`` are
``w(alpha) = (1 - alpha) * base + alpha * end`` on line leaves and ``base`` everywhere else. In the
structured setting only the norm layers are lines (the convs are shared, as in the reference);
for unstructured sparsity and quantisation every parameter is a line.

Example:
    >>> import jax, subnets
    >>> from subnets import subspace
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> s = subspace.init_line(net, key=jax.random.key(0), compression="unstructured")
    >>> s.kind, float(subspace.regulariser(s)) < 0.1
    ('line', True)
    >>> v = subspace.at_level(s, net, density=0.3)
    >>> v["params"]["dense1"]["kernel"].shape
    (144, 144)

References:
    Nunez et al., LCS: Learning Compressible Subspaces (arXiv:2110.04252), Sec. 3;
    Wortsman et al., Learning Neural Network Subspaces (ICML 2021).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from subnets.graph import ChannelGraph, Path, get_path, leaf_paths, set_paths

COMPRESSIONS = ("structured", "unstructured", "quantized")
# Default level ranges: width factor, TopK density, bits (the reference's CIFAR-10 settings).
DEFAULT_RANGES = {"structured": (0.25, 1.0), "unstructured": (0.025, 1.0), "quantized": (3, 8)}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Subspace:
    """A point or a line of networks, with the compression it was trained for.

    Attributes:
        base: variables tree; the alpha = 0 end of every line leaf, shared weights elsewhere.
        end: the alpha = 1 end of the line leaves (nested like ``base``); ``{}`` for a point.
        compression: ``"structured"``, ``"unstructured"`` or ``"quantized"``.
        low, high: the level range alpha in [0, 1] maps onto (width, density or bits).
        cosine: the line leaves the cos^2 regulariser covers (layer kernels and norm scales,
            from the graph's roles when the line was made with one); ``None``: guessed from
            the variables' layout (see :func:`regulariser`).
    """

    base: dict
    end: dict
    compression: str = dataclasses.field(default="structured", metadata={"static": True})
    low: float = dataclasses.field(default=0.25, metadata={"static": True})
    high: float = dataclasses.field(default=1.0, metadata={"static": True})
    cosine: tuple[Path, ...] | None = dataclasses.field(default=None, metadata={"static": True})

    @property
    def kind(self) -> str:
        """``"line"`` when there is a second endpoint, else ``"point"``."""
        return "line" if self.end else "point"

    def weights(self, alpha: Any) -> dict:
        """Uncompressed variables at ``alpha`` (traceable); see :func:`weights`."""
        return weights(self, alpha)


def _check_compression(compression: str, low: float | None, high: float | None):
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    d_low, d_high = DEFAULT_RANGES[compression]
    low = d_low if low is None else low
    high = d_high if high is None else high
    if compression == "quantized":
        if int(low) != low or int(high) != high or not 2 <= low <= high <= 16:
            raise ValueError(f"quantized bits range must be integers 2 <= low <= high <= 16, "
                             f"got [{low}, {high}]")
        low, high = int(low), int(high)
    elif not 0.0 < low <= high <= 1.0:
        raise ValueError(f"{compression} level range must satisfy 0 < low <= high <= 1, "
                         f"got [{low}, {high}]")
    return float(low) if compression != "quantized" else low, \
        float(high) if compression != "quantized" else high


def _roles(graph: ChannelGraph | None, variables: Mapping) -> dict[Path, str]:
    """``{path: "layer" | "norm_scale" | "norm_shift"}``: layer kernels and norm parameters.

    From the graph's layers and norms; without a graph, from the variables' Flax layout
    (:func:`subnets.models._common.flax_roles`).
    """
    if graph is None:
        from subnets.models._common import flax_roles

        return flax_roles(variables)
    out = {lay.path: "layer" for lay in graph.layers}
    for n in graph.norms:
        out.update({p: r for p, r in ((n.scale, "norm_scale"), (n.shift, "norm_shift")) if p})
    return out


def line_paths(graph: ChannelGraph | None, variables: Any, compression: str | None = None
               ) -> list[Path]:
    """Paths that get two endpoints: norm scale/shift when structured, every param otherwise.

    Args:
        graph: the model's graph (norms are read from it); ``None``: guessed from the Flax
            layout. The old call ``line_paths(variables, compression)`` still works, with a
            ``DeprecationWarning``.
        variables: the variables tree.
        compression: one of :data:`COMPRESSIONS`.
    """
    if compression is None and isinstance(graph, Mapping):
        warnings.warn("line_paths(variables, compression) is deprecated; call "
                      "line_paths(graph, variables, compression)", DeprecationWarning,
                      stacklevel=2)
        graph, variables, compression = None, graph, variables
    params = list(leaf_paths(variables.get("params", {}), ("params",)))
    if compression != "structured":
        return [p for p, _ in params]
    roles = _roles(graph, variables)
    return [p for p, _ in params if roles.get(p) in ("norm_scale", "norm_shift")]


def _subtree(variables: Mapping, paths: list[Path]) -> dict:
    out: dict = {}
    for p in paths:
        node = out
        for k in p[:-1]:
            node = node.setdefault(k, {})
        node[p[-1]] = get_path(variables, p)
    return out


def point(variables: Mapping, *, compression: str = "structured", low: float | None = None,
          high: float | None = None) -> Subspace:
    """A point subspace: one set of weights, trained at randomly drawn compression levels.

    Args:
        variables: the network's variables.
        compression: which compression the levels mean.
        low, high: level range (default: width [0.25, 1], density [0.025, 1], bits [3, 8]).
    """
    low, high = _check_compression(compression, low, high)
    return Subspace(dict(variables), {}, compression, low, high)


def line(v0: Mapping, v1: Mapping, *, compression: str = "structured",
         low: float | None = None, high: float | None = None,
         graph: ChannelGraph | None = None) -> Subspace:
    """A line subspace from two endpoints; only ``v1``'s line leaves are kept.

    Args:
        v0: variables at alpha = 0 (the most compressed end).
        v1: variables at alpha = 1, same structure and shapes as ``v0``.
        compression, low, high: as for :func:`point`.
        graph: the model's graph: which leaves are norms and kernels (default: guessed from
            the Flax layout).

    Raises:
        ValueError: naming the first path whose shape differs between the endpoints.
    """
    low, high = _check_compression(compression, low, high)
    paths = line_paths(graph, v0, compression)
    for p in paths:
        try:
            b = get_path(v1, p)
        except KeyError as e:
            raise ValueError(f"line endpoints differ: {e.args[0]} in v1") from None
        a = get_path(v0, p)
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(f"line endpoints differ at {'/'.join(p)}: shapes "
                             f"{jnp.shape(a)} vs {jnp.shape(b)}")
    if not paths:
        raise ValueError(f"no {compression} line leaves in v0 (no norm layers?): use point()")
    roles = _roles(graph, v0)
    cosine = tuple(p for p in paths if roles.get(p) in ("layer", "norm_scale"))
    return Subspace(dict(v0), _subtree(v1, paths), compression, low, high, cosine)


def init_line(net: Any, *, key: jax.Array, compression: str = "structured",
              low: float | None = None, high: float | None = None) -> Subspace:
    """The reference's endpoint initialisation: two independent inits of every kernel.

    Kernels of both ends are drawn with different keys (the reference draws Kaiming-normal for
    ``weight`` and ``weight1``; we use the model's initialiser for both); norm endpoints both
    start at scale 1, shift 0, as the reference's ``weight1``/``bias1`` do.
    """
    k0, k1 = jax.random.split(key)
    return line(net.init(k0), net.init(k1), compression=compression, low=low, high=high,
                graph=net.graph)


def init_point(net: Any, *, key: jax.Array, compression: str = "structured",
               low: float | None = None, high: float | None = None) -> Subspace:
    """A point subspace at a fresh initialisation of ``net``."""
    return point(net.init(key), compression=compression, low=low, high=high)


def weights(subspace: Subspace, alpha: Any) -> dict:
    """Variables at ``alpha`` before compression; ``alpha`` may be traced (vmappable)."""
    if not subspace.end:
        return subspace.base
    updates = {p: (1.0 - alpha) * get_path(subspace.base, p) + alpha * e
               for p, e in leaf_paths(subspace.end)}
    return set_paths(subspace.base, updates)


def regulariser(subspace: Subspace) -> jax.Array:
    """cos^2 between the endpoints, over the layer kernels and norm scales of the line leaves.

    As in the reference, the inner products and squared norms are summed over all layers
    first, giving ONE cosine for the whole network (not a mean of per-layer cosines). Zero for
    a point subspace. The leaves are ``subspace.cosine`` (the graph's roles, recorded by
    :func:`line`), or, for a subspace made without a graph, guessed from the Flax layout.
    """
    paths = subspace.cosine
    if paths is None:
        roles = _roles(None, subspace.end)
        paths = tuple(p for p, _ in leaf_paths(subspace.end)
                      if roles.get(p) in ("layer", "norm_scale"))
    num = n0 = n1 = jnp.zeros((), jnp.float32)
    if not paths:
        return num
    for p in paths:
        b, e = get_path(subspace.base, p), get_path(subspace.end, p)
        num = num + jnp.vdot(b, e)
        n0 = n0 + jnp.vdot(b, b)
        n1 = n1 + jnp.vdot(e, e)
    return num**2 / jnp.maximum(n0 * n1, 1e-30)
