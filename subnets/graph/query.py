"""One gather and one (spatial, channels) view: the channel surgery every transform shares.

Example:
    >>> import numpy as np
    >>> from subnets.graph import ChannelGraph, Group, Member
    >>> g = ChannelGraph((Group("h", 3, (Member(("k",), 1), Member(("b",), 0, role="bias"))),))
    >>> v = {"k": np.arange(6.).reshape(2, 3), "b": np.arange(3.)}
    >>> take(g, v, {"h": [2, 0]})["k"].tolist()
    [[2.0, 0.0], [5.0, 3.0]]

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.1 (permutation invariance).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from subnets.graph.types import Member, Path, get_path, set_paths

if TYPE_CHECKING:
    from subnets.graph.types import ChannelGraph


def view(a: Any, member: Member, size: int) -> Any:
    """View member axis ``member.axis`` of ``a`` as ``(spatial, size)`` (one more axis)."""
    shape = a.shape
    return a.reshape(shape[: member.axis] + (member.spatial, size) + shape[member.axis + 1 :])


def unview(a: Any, member: Member) -> Any:
    """Undo :func:`view`: merge axes ``member.axis`` and ``member.axis + 1``."""
    shape = a.shape
    ax = member.axis
    return a.reshape(shape[:ax] + (shape[ax] * shape[ax + 1],) + shape[ax + 2 :])


def _traced(a: Any) -> bool:
    return isinstance(a, jax.core.Tracer)


def take(graph: ChannelGraph, variables: Mapping, indices: Mapping[str, Any]) -> dict:
    """New variables keeping channels ``indices[g]`` (in that order) of each named group.

    A permutation reorders channels, a prefix slices, any subset removes the rest: one gather
    per member, on the member's ``(spatial, channels)`` view. Concrete arrays go through NumPy
    (eager jnp would compile once per shape); traced ones (under ``jit``/``vmap``) through JAX.

    Args:
        graph: the channel graph.
        variables: the variables tree.
        indices: ``{group_name: 1-D int indices}``.

    Returns:
        The new variables tree (arrays not touched are shared).

    Raises:
        ValueError: naming the group whose indices are not 1-D or out of range.
    """
    updates: dict[Path, Any] = {}
    for name, idx in indices.items():
        g = graph[name]
        traced_idx = _traced(idx)
        if not traced_idx:
            idx = np.asarray(idx)
            if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"indices for group {name!r} must be 1-D integers, got "
                                 f"shape {idx.shape} dtype {idx.dtype}")
        for m in g.members:
            a = updates.get(m.path)
            if a is None:
                a = get_path(variables, m.path)
                a = a if _traced(a) else np.asarray(a)
            size = a.shape[m.axis] // m.spatial
            if not traced_idx and idx.size and (idx.min() < 0 or idx.max() >= size):
                raise ValueError(f"indices for group {name!r} outside [0, {size}) at "
                                 f"{'/'.join(m.path)} axis {m.axis}")
            if traced_idx or _traced(a):
                out = jnp.take(jnp.asarray(view(a, m, size)), idx, axis=m.axis + 1)
            else:
                out = np.take(view(a, m, size), idx, axis=m.axis + 1)
            updates[m.path] = unview(out, m)
    return set_paths(variables, updates)
