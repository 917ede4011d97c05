"""Masked training: an optax wrapper whose state carries the pruning masks.

Masks are ``{path: bool array}`` keyed by the FULL variables path, e.g.
``("params", "conv0", "kernel")`` -- the form :func:`subnets.transforms.topk_masks` returns and
every pruning function here takes -- or, as optax and jaxpruner take them, a tree shaped like
``params`` with a bool array (or None: not pruned) at each leaf; :func:`mask_tree` and
:func:`masks_from_tree` convert. An optax transformation sees only the ``params`` subtree, so
inside :func:`masked_optimizer` a mask at ``("params", *rest)`` applies to the update at
``rest``; a mask whose path does not start with ``"params"`` is refused (batch statistics are
not optimised). ``True`` means keep. (The wrapper was called ``masked``, which shadowed
``optax.masked``, a different thing: it selects the leaves a transformation applies to.
``masked`` remains as a deprecated alias.)

Both the incoming gradients (so momentum and second moments never see pruned weights) and the
outgoing updates (so weight decay, or moments left over from before :func:`set_masks`, cannot
move them) are masked, hence a weight that is zero and masked stays *exactly* zero: ``0 + 0``.
The weights must be zero when training starts: call :func:`apply_masks` first.

Example:
    >>> import jax.numpy as jnp, optax
    >>> params = {"d": {"kernel": jnp.array([[1.0, 0.0]])}}
    >>> masks = {("params", "d", "kernel"): jnp.array([[True, False]])}
    >>> tx = masked_optimizer(optax.sgd(0.1, momentum=0.9), masks)
    >>> state = tx.init(params)
    >>> upd, state = tx.update({"d": {"kernel": jnp.ones((1, 2))}}, state, params)
    >>> upd["d"]["kernel"].tolist()
    [[-0.10000000149011612, 0.0]]

References:
    Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019); Lee et al., jaxpruner
    (arXiv:2304.14082), which keeps masks in the optimiser state the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from subnets.graph import Path, get_path, set_paths

Masks = dict[Path, jax.Array]


class MaskedState(NamedTuple):
    """State of :func:`masked_optimizer`: the wrapped optimiser's state and the keep-masks."""

    inner_state: Any
    masks: Masks


def _inner_path(path: Path) -> Path:
    if not path or path[0] != "params":
        raise ValueError(f"mask path {'/'.join(map(str, path))} is not under 'params'; only "
                         "parameters are optimised, so masks must be keyed ('params', ...)")
    return tuple(path[1:])


def _mask_params_tree(tree: Any, masks: Mapping[Path, Any]) -> Any:
    """Zero the masked-out entries of a ``params``-shaped tree (masks keyed by full path)."""
    if tree is None or not masks:
        return tree
    updates = {}
    for path, m in masks.items():
        inner = _inner_path(path)
        leaf = get_path(tree, inner)
        if jnp.shape(leaf) != jnp.shape(m):
            raise ValueError(f"mask for {'/'.join(path)} has shape {jnp.shape(m)}, but the "
                             f"array there has shape {jnp.shape(leaf)}")
        # where, not multiply: an inf/nan gradient must not leak through a pruned weight.
        updates[inner] = jnp.where(m, leaf, jnp.zeros_like(leaf))
    return set_paths(tree, updates)


def mask_tree(masks: Mapping[Path, Any], params: Mapping) -> Any:
    """The masks as a tree shaped like ``params`` (None where a leaf is not pruned).

    Example:
        >>> import numpy as np
        >>> t = mask_tree({("params", "d", "kernel"): np.ones(2, bool)},
        ...               {"d": {"kernel": np.zeros(2), "bias": np.zeros(2)}})
        >>> t["d"]["bias"] is None, t["d"]["kernel"].tolist()
        (True, [True, True])
    """
    inner = {_inner_path(p): m for p, m in masks.items()}

    def build(tree, prefix):
        if isinstance(tree, Mapping):
            return {k: build(v, prefix + (k,)) for k, v in tree.items()}
        m = inner.get(prefix)
        if m is not None and jnp.shape(m) != jnp.shape(tree):
            raise ValueError(f"mask for params/{'/'.join(prefix)} has shape {jnp.shape(m)}, "
                             f"the parameter has {jnp.shape(tree)}")
        return None if m is None else jnp.asarray(m, bool)

    missing = set(inner) - {tuple(p) for p, _ in _leaves(params)}
    if missing:
        raise ValueError(f"masks name params that do not exist: "
                         f"{sorted('/'.join(p) for p in missing)}")
    return build(params, ())


def masks_from_tree(tree: Any) -> Masks:
    """``{("params", ...): mask}`` from a params-shaped tree of bool arrays / None."""
    return {("params", *p): jnp.asarray(m, bool) for p, m in _leaves(tree) if m is not None}


def _leaves(tree: Any, prefix: Path = ()) -> list[tuple[Path, Any]]:
    if isinstance(tree, Mapping):
        return [x for k, v in tree.items() for x in _leaves(v, prefix + (k,))]
    return [(prefix, tree)]


def _as_path_masks(masks: Any) -> Masks:
    if isinstance(masks, Mapping) and masks and all(isinstance(k, tuple) for k in masks):
        return _as_bool(masks)
    return masks_from_tree(masks) if masks else {}


def masked_optimizer(inner: optax.GradientTransformation, masks: Mapping
                     ) -> optax.GradientTransformation:
    """Wrap any optax optimiser so pruned weights receive neither gradient nor update.

    Args:
        inner: the optimiser (adam, sgd with momentum, a chain with weight decay, ...).
        masks: ``{full variables path: bool keep-mask}`` (paths start with ``"params"``), or a
            params-shaped tree of bool masks / None (:func:`mask_tree`). Weights not named
            are trained normally.

    Returns:
        A ``GradientTransformation`` whose state is a :class:`MaskedState`.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> tx = masked_optimizer(optax.adam(1e-3), {("params", "w"): jnp.array([True, False])})
        >>> s = tx.init({"w": jnp.zeros(2)})
        >>> u, s = tx.update({"w": jnp.ones(2)}, s, {"w": jnp.zeros(2)})
        >>> float(u["w"][1])
        0.0

    References:
        Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019).
    """
    masks = _as_path_masks(masks)
    for p in masks:
        _inner_path(p)

    def init_fn(params):
        _mask_params_tree(params, masks)  # validates paths and shapes early
        return MaskedState(inner.init(params), masks)

    def update_fn(updates, state, params=None):
        grads = _mask_params_tree(updates, state.masks)
        new_updates, inner_state = inner.update(grads, state.inner_state, params)
        return _mask_params_tree(new_updates, state.masks), MaskedState(inner_state, state.masks)

    return optax.GradientTransformation(init_fn, update_fn)


masked = masked_optimizer  # deprecated alias (it shadowed optax.masked); use masked_optimizer


def set_masks(state: MaskedState, masks: Mapping[Path, Any]) -> MaskedState:
    """Replace the masks in a :class:`MaskedState` (e.g. between IMP levels); path-keyed or a
    params-shaped tree, as :func:`masked_optimizer` takes.

    The new masks must name the same paths with the same shapes, so a jitted step taking the
    state keeps its compilation. The optimiser's own state is kept; updates of newly pruned
    weights are masked regardless of any momentum they still hold.
    """
    if not isinstance(state, MaskedState):
        raise TypeError(f"set_masks needs a MaskedState, got {type(state).__name__}")
    new = _as_path_masks(masks)
    if set(new) != set(state.masks):
        raise ValueError(f"set_masks: paths differ; old {sorted(state.masks)}, new {sorted(new)}")
    for p, m in new.items():
        if jnp.shape(m) != jnp.shape(state.masks[p]):
            raise ValueError(f"set_masks: mask for {'/'.join(p)} has shape {jnp.shape(m)}, "
                             f"expected {jnp.shape(state.masks[p])}")
    return state._replace(masks=new)


def apply_masks(variables: Mapping, masks: Mapping[Path, Any]) -> dict:
    """Zero every masked-out weight (masks keyed by full variables path).

    Example:
        >>> import numpy as np
        >>> v = {"params": {"d": {"kernel": np.ones((2, 2))}}}
        >>> m = {("params", "d", "kernel"): np.eye(2, dtype=bool)}
        >>> apply_masks(v, m)["params"]["d"]["kernel"].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    updates = {}
    for path, m in masks.items():
        w = jnp.asarray(get_path(variables, path))
        if w.shape != jnp.shape(m):
            raise ValueError(f"mask for {'/'.join(path)} has shape {jnp.shape(m)}, but the "
                             f"weights there have shape {w.shape}")
        updates[path] = jnp.where(jnp.asarray(m, bool), w, jnp.zeros_like(w))
    return set_paths(variables, updates)


def density(masks: Mapping[Path, Any]) -> float:
    """Fraction of masked weights that are kept (1.0 for no masks)."""
    total = sum(int(np.size(m)) for m in masks.values())
    kept = sum(int(np.sum(np.asarray(m))) for m in masks.values())
    return kept / total if total else 1.0


def sparsity_report(variables: Mapping, masks: Mapping[Path, Any]) -> dict[str, dict]:
    """Per-layer and total counts: size, kept by the mask, and exact zeros in the weights.

    Returns:
        ``{"a/b/kernel": {"size", "kept", "zeros", "density"}, ..., "total": {...}}``; ``zeros``
        counts weights that are exactly 0 (pruned ones, plus any that happen to be 0).
    """
    rows: dict[str, dict] = {}
    size = kept = zeros = 0
    for path, m in masks.items():
        w = np.asarray(get_path(variables, path))
        row = {"size": int(w.size), "kept": int(np.sum(np.asarray(m))),
               "zeros": int(np.sum(w == 0))}
        row["density"] = row["kept"] / row["size"]
        rows["/".join(path)] = row
        size, kept, zeros = size + row["size"], kept + row["kept"], zeros + row["zeros"]
    rows["total"] = {"size": size, "kept": kept, "zeros": zeros,
                     "density": kept / size if size else 1.0}
    return rows


def _as_bool(masks: Mapping[Path, Any]) -> Masks:
    return {tuple(p): jnp.asarray(m, bool) for p, m in masks.items()}
