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
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from subnets.graph import Path, get_path, leaf_paths, set_paths

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
    """

    base: dict
    end: dict
    compression: str = dataclasses.field(default="structured", metadata={"static": True})
    low: float = dataclasses.field(default=0.25, metadata={"static": True})
    high: float = dataclasses.field(default=1.0, metadata={"static": True})

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


def line_paths(variables: Mapping, compression: str) -> list[Path]:
    """Paths that get two endpoints: norm scale/shift when structured, every param otherwise."""
    out = []
    for path, _ in leaf_paths(variables.get("params", {}), ("params",)):
        if compression == "structured":
            module = get_path(variables, path[:-1])
            if "scale" not in module or "kernel" in module:
                continue
        out.append(path)
    return out


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
         low: float | None = None, high: float | None = None) -> Subspace:
    """A line subspace from two endpoints; only ``v1``'s line leaves are kept.

    Args:
        v0: variables at alpha = 0 (the most compressed end).
        v1: variables at alpha = 1, same structure and shapes as ``v0``.
        compression, low, high: as for :func:`point`.

    Raises:
        ValueError: naming the first path whose shape differs between the endpoints.
    """
    low, high = _check_compression(compression, low, high)
    paths = line_paths(v0, compression)
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
    return Subspace(dict(v0), _subtree(v1, paths), compression, low, high)


def init_line(net: Any, *, key: jax.Array, compression: str = "structured",
              low: float | None = None, high: float | None = None) -> Subspace:
    """The reference's endpoint initialisation: two independent inits of every kernel.

    Kernels of both ends are drawn with different keys (the reference draws Kaiming-normal for
    ``weight`` and ``weight1``; we use the zoo's initialiser for both); norm endpoints both
    start at scale 1, shift 0, as the reference's ``weight1``/``bias1`` do.
    """
    k0, k1 = jax.random.split(key)
    return line(net.init(k0), net.init(k1), compression=compression, low=low, high=high)


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
    """cos^2 between the endpoints, over kernels and norm scales of the line leaves.

    As in the reference, the inner products and squared norms are summed over all layers
    first, giving ONE cosine for the whole network (not a mean of per-layer cosines). Zero for
    a point subspace.
    """
    num = n0 = n1 = jnp.zeros((), jnp.float32)
    found = False
    for p, e in leaf_paths(subspace.end):
        if p[-1] not in ("kernel", "scale"):
            continue
        b = get_path(subspace.base, p)
        found = True
        num = num + jnp.vdot(b, e)
        n0 = n0 + jnp.vdot(b, b)
        n1 = n1 + jnp.vdot(e, e)
    if not found:
        return jnp.zeros((), jnp.float32)
    return num**2 / jnp.maximum(n0 * n1, 1e-30)
