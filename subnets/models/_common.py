"""Helpers the adapters share: full-shape test, train-keyword detection, the tracing call."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from subnets.graph import ChannelGraph, leaf_paths


def is_full(graph: ChannelGraph, variables: Mapping) -> bool:
    """Does every array of ``variables`` have its full (traced) shape? Static under jit."""
    full = dict(graph.shapes)
    for path, leaf in leaf_paths(variables):
        if full.get(path) != tuple(np.shape(leaf)):
            return False
    return True


def example_batch(example_x: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    """``(batch, input_shape)`` from an example batch (leading batch axis required)."""
    x = np.asarray(example_x, np.float32)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"example_x must be a batch (N, ...) with N >= 1, got shape {x.shape}")
    return x, tuple(int(s) for s in x.shape[1:])


def train_keyword(fn: Callable, train_arg: str | None | bool) -> str | None:
    """The keyword ``fn`` takes for train mode: given, or ``"train"`` if its signature has it."""
    if train_arg is not True and train_arg is not None and train_arg is not False:
        return str(train_arg)
    if train_arg is False:
        return None
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    return "train" if "train" in params else None


def trace_graph(apply_fn: Callable, variables: Mapping, x: np.ndarray, *,
                names: Mapping[str, str] | None, fixed: tuple[str, ...],
                train_apply_fn: Callable | None = None) -> ChannelGraph:
    """``subnets.graph.trace``; with running statistics, the train pass gives the momenta."""
    from subnets.graph import trace

    if "batch_stats" not in variables or not variables["batch_stats"]:
        train_apply_fn = None
    return trace(apply_fn, variables, x, names=names, fixed=tuple(fixed),
                 train_apply_fn=train_apply_fn)


def as_plain(tree: Any) -> dict:
    """A plain nested dict of arrays (Flax may return FrozenDicts or State objects)."""
    if isinstance(tree, Mapping):
        return {str(k): as_plain(v) for k, v in tree.items()}
    return jax.numpy.asarray(tree)


def flax_roles(variables: Mapping) -> dict[tuple[str, ...], str]:
    """Roles of ``params`` leaves guessed from Flax's leaf names, for variables with no graph.

    ``kernel`` -> ``"layer"``; in a module with a ``scale`` and no ``kernel`` (a norm):
    ``scale`` -> ``"norm_scale"``, ``bias`` -> ``"norm_shift"``. Only this package's models
    layer knows the names; algorithms read roles from the graph and use this when there is
    none (e.g. a bare variables tree).

    Example:
        >>> import numpy as np
        >>> v = {"params": {"d": {"kernel": np.ones((2, 2))},
        ...                 "n": {"scale": np.ones(2), "bias": np.zeros(2)}}}
        >>> sorted(flax_roles(v).values())
        ['layer', 'norm_scale', 'norm_shift']
    """
    from subnets.graph import get_path

    out: dict[tuple[str, ...], str] = {}
    for path, _ in leaf_paths(variables.get("params", {}), ("params",)):
        module = get_path(variables, path[:-1])
        if path[-1] == "kernel":
            out[path] = "layer"
        elif "scale" in module and "kernel" not in module and path[-1] in ("scale", "bias"):
            out[path] = "norm_scale" if path[-1] == "scale" else "norm_shift"
    return out
