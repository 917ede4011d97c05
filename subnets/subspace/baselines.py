"""The baselines LCS is measured against, trained with the same step and budget.

* **Discrete**: one network trained at the four widths {0.25, 0.5, 0.75, 1} every step.
* **Sandwich**: the sandwich rule {min, max, U, U} with BatchNorm, evaluated with the running
  statistics it learnt (no recalibration), as in the LCS paper.
* **BatchNorm recalibration**: re-estimate the running statistics of a sliced network on
  training data; the slimmable-network practice LCS avoids, kept as a reference point.

Example:
    >>> from subnets.subspace import baselines
    >>> baselines.discrete_config().alphas
    (0.0, 0.3333333333333333, 0.6666666666666666, 1.0)

References:
    Nunez et al., LCS (arXiv:2110.04252), Sec. 4.2 (Discrete and Sandwich baselines);
    Yu & Huang, Universally Slimmable Networks (ICCV 2019), Sec. 3.3 (BN calibration).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from subnets.graph import ChannelGraph, Path, leaf_paths, set_paths
from subnets.subspace.train import LCSConfig


def discrete_config(widths: Sequence[float] = (0.25, 0.5, 0.75, 1.0), low: float = 0.25,
                    high: float = 1.0) -> LCSConfig:
    """Train at these fixed widths every step (alpha = (width - low) / (high - low))."""
    for w in widths:
        if not low <= w <= high:
            raise ValueError(f"discrete width {w} outside the subspace range [{low}, {high}]")
    return LCSConfig(samples=len(widths), sampling="discrete",
                     alphas=tuple((w - low) / (high - low) for w in widths))


def sandwich_config(samples: int = 4) -> LCSConfig:
    """The sandwich rule: alpha = 0, 1 and ``samples - 2`` uniform draws per step."""
    return LCSConfig(samples=samples, sampling="sandwich")


def momenta(graph: ChannelGraph) -> dict[Path, float]:
    """Running-statistics path -> the momentum its norm updates it with, where the graph knows it.

    Example:
        >>> import subnets
        >>> g = subnets.zoo.create("cnn-s", num_classes=3).graph
        >>> sorted({round(m, 6) for m in momenta(g).values()})  # read as float32 from the model
        [0.9]
    """
    out: dict[Path, float] = {}
    for norm in graph.norms:
        if norm.momentum is not None:
            out.update({p: float(norm.momentum) for p in (norm.mean, norm.var) if p is not None})
    return out


def recalibrate(net: Any, variables: Mapping, x: np.ndarray, *, batch_size: int = 256,
                num_batches: int | None = None) -> dict:
    """BatchNorm running statistics re-estimated for these (e.g. sliced) variables.

    Each batch's per-channel mean and variance are averaged over the batches (the cumulative
    average of slimmable networks' calibration), replacing the stored statistics. One train
    pass from zero statistics leaves ``(1 - momentum) * batch statistic``; the momentum of
    each statistic is its norm's (``Norm.momentum``, read from the model when it was traced).
    Where the graph has none, it is measured instead of assumed: one more pass from statistics
    of 1 leaves ``momentum + (1 - momentum) * batch``, and the difference of the two is the
    momentum.

    Args:
        net: the model (with running-statistics norms).
        variables: variables at the level to calibrate (physically sliced is fine).
        x: calibration inputs (training data; labels are not needed).
        batch_size: examples per batch.
        num_batches: use only the first batches (default: all of ``x``).

    Raises:
        ValueError: if the variables have no ``batch_stats``.
    """
    if "batch_stats" not in variables:
        raise ValueError("recalibrate needs BatchNorm variables (no 'batch_stats' collection)")
    paths = [p for p, _ in leaf_paths(variables["batch_stats"], ("batch_stats",))]
    known = momenta(net.graph)
    zeroed = set_paths(variables, {p: jnp.zeros_like(a) for p, a in
                                   leaf_paths(variables["batch_stats"], ("batch_stats",))})
    ones = set_paths(variables, {p: jnp.ones_like(a) for p, a in
                                 leaf_paths(variables["batch_stats"], ("batch_stats",))})
    unknown = [p for p in paths if p not in known]

    @jax.jit
    def batch_stats(v0, v1, xb):
        _, new = net.apply(v0, xb, train=True, mutable=True)
        flat = dict(leaf_paths(new, ("batch_stats",)))
        if unknown:
            _, from_one = net.apply(v1, xb, train=True, mutable=True)
            one = dict(leaf_paths(from_one, ("batch_stats",)))
        out = {}
        for p, s in flat.items():
            m = known[p] if p in known else one[p] - s  # per channel, measured
            out[p[1:]] = s / (1.0 - m)
        return set_paths(new, out)

    total, count = None, 0
    n = len(x) // batch_size if len(x) >= batch_size else 1
    n = min(n, num_batches) if num_batches else n
    for i in range(n):
        s = batch_stats(zeroed, ones, x[i * batch_size:(i + 1) * batch_size])
        total = s if total is None else jax.tree.map(jnp.add, total, s)
        count += 1
    stats = jax.tree.map(lambda t: np.asarray(t / count), total)
    return {**variables, "batch_stats": stats}
