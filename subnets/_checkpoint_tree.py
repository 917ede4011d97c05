"""Putting a restored checkpoint back into the pytree types that were saved (private).

Orbax restores a saved tree as plain dicts and lists: an optax ``ScaleByAdamState`` comes back
as ``{"count": ..., "mu": ..., "nu": ...}``, a tuple as a list, an ``EmptyState`` as nothing.
Which classes were saved cannot be read back from the files without running code (that is what
makes pickle unsafe), so the types come from a *template*: a tree of the same structure made by
the caller, e.g. ``train.init_state(variables, tx)``. :func:`like` matches leaves by their key
path (dict key, attribute name or sequence index, all as strings), checks shapes and dtypes, and
returns the template's structure with the restored values as the template's array types (a JAX
array on the template leaf's sharding, a numpy array, or a Python scalar).

:func:`describe` records, for :func:`subnets.checkpoint.save_state`, each leaf's key path, dtype
and shape, so a restore into a state of another optimiser names the first differing leaf.

Example:
    >>> import jax.numpy as jnp, numpy as np, optax
    >>> from subnets import _checkpoint_tree
    >>> template = optax.adam(1e-3).init({"w": jnp.zeros(2)})
    >>> plain = [{"count": np.int32(3), "mu": {"w": np.ones(2, np.float32)},
    ...           "nu": {"w": np.ones(2, np.float32)}}, None]
    >>> back = _checkpoint_tree.like(plain, template, "ck")
    >>> type(back[0]).__name__, int(back[0].count)
    ('ScaleByAdamState', 3)

References:
    orbax-checkpoint documentation (PyTreeCheckpointer restores without a target as dicts);
    ``jax.tree_util`` key paths.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import numpy as np

Path = tuple[str, ...]


def _name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def flat(tree: Any) -> dict[Path, Any]:
    """``{path: leaf}``, paths as tuples of strings (dict key, attribute, index)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out[tuple(_name(k) for k in path)] = leaf
    return out


def describe(tree: Any) -> list[list[Any]]:
    """``[[keystr, dtype, shape], ...]`` of every leaf, in ``jax.tree.leaves`` order."""
    return [[jax.tree_util.keystr(p), str(np.asarray(a).dtype) if not hasattr(a, "dtype")
             else str(a.dtype), [int(s) for s in np.shape(a)]]
            for p, a in jax.tree_util.tree_flatten_with_path(tree)[0]]


def check_described(saved: list, template: Any, where: str) -> None:
    """Raise ``ValueError`` naming the first leaf whose path, dtype or shape differs."""
    want = describe(template)
    for s, w in itertools.zip_longest(saved, want):
        if s is None or w is None:
            extra, whose = (s, "checkpoint") if w is None else (w, "template")
            raise ValueError(f"{where}: only the {whose} has leaf {extra[0]} ({len(saved)} "
                             f"arrays saved, {len(want)} in the template: different model or "
                             "optimiser)")
        if list(s) != w:
            raise ValueError(f"{where}: leaf {s[0]} is {s[1]}{tuple(s[2])}, the template's "
                             f"{w[0]} is {w[1]}{tuple(w[2])} (different model or optimiser)")


def cast(value: Any, template_leaf: Any) -> Any:
    """``value`` as the template leaf's type: JAX array (same sharding and commitment), numpy,
    or scalar."""
    arr = np.asarray(value)
    if isinstance(template_leaf, jax.Array):
        arr = arr.astype(template_leaf.dtype, copy=False)
        if not getattr(template_leaf, "committed", True):
            return jax.numpy.asarray(arr)  # uncommitted, like the template: jit reuses its code
        return jax.device_put(arr, template_leaf.sharding)
    if isinstance(template_leaf, np.ndarray | np.generic):
        return arr.astype(template_leaf.dtype, copy=False).reshape(np.shape(template_leaf))
    if isinstance(template_leaf, bool | int | float | complex):
        return type(template_leaf)(arr.item())
    return arr


def like(restored: Any, template: Any, where: str) -> Any:
    """``restored`` (orbax's dicts and lists) in ``template``'s structure and leaf types.

    Raises:
        ValueError: a leaf is missing, extra, or of another shape or dtype kind, named by path.
    """
    got = flat(restored)
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, t in paths:
        key = tuple(_name(k) for k in path)
        name = jax.tree_util.keystr(path)
        if key not in got:
            raise ValueError(f"{where}: holds no leaf {name} (the template has it)")
        value = np.asarray(got.pop(key))
        if value.shape != np.shape(t):
            raise ValueError(f"{where}: leaf {name} has shape {value.shape}, the template "
                             f"{np.shape(t)}")
        want = np.asarray(t).dtype if not hasattr(t, "dtype") else np.dtype(t.dtype)
        if value.dtype != want and not np.can_cast(value.dtype, want, "same_kind"):
            raise ValueError(f"{where}: leaf {name} is {value.dtype}, the template {want}")
        leaves.append(cast(value, t))
    if got:
        extra = "/".join(sorted(got)[0])
        raise ValueError(f"{where}: holds {len(got)} leaf(s) the template lacks, e.g. {extra}")
    return jax.tree_util.tree_unflatten(treedef, leaves)
