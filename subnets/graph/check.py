"""Compare a hand-declared graph with the one traced from the model's code.

Example: a declared graph that forgot the second layer's input member fails, naming it.
    >>> import jax.numpy as jnp, numpy as np
    >>> from subnets.graph import ChannelGraph, Group, Member, check
    >>> v = {"a": np.ones((3, 4), np.float32), "b": np.ones((4, 2), np.float32)}
    >>> def apply(v, x):
    ...     return jnp.maximum(x @ v["a"], 0) @ v["b"]
    >>> ok = ChannelGraph((Group("in", 3, (Member(("a",), 0),), fixed=True),
    ...                    Group("h", 4, (Member(("a",), 1), Member(("b",), 0))),
    ...                    Group("out", 2, (Member(("b",), 1),), fixed=True)))
    >>> check(ok, apply, v, np.zeros((1, 3), np.float32))
    >>> bad = ChannelGraph((ok["in"], Group("h", 4, (Member(("a",), 1),)), ok["out"]))
    >>> check(bad, apply, v, np.zeros((1, 3), np.float32))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: declared group 'h' lacks member b axis 0 (role 'in' of layer b), ...

References:
    Fang et al., DepGraph / Torch-Pruning (CVPR 2023).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from subnets.graph.types import ChannelGraph, Layer

_LAYER_FIELDS = ("kind", "positions", "window", "in_positions")
_OPTIONAL_FIELDS = ("kernel_size", "stride", "padding", "in_spatial", "out_spatial", "bias",
                    "norm", "activation")


def _key(m) -> tuple:
    return (m.path, m.axis)


def _show(m) -> str:
    extra = f", spatial {m.spatial}" if m.spatial > 1 else ""
    who = f" of layer {'/'.join(m.layer)}" if m.layer else ""
    return f"{'/'.join(m.path)} axis {m.axis}{extra} (role {m.role!r}{who})"


def first_difference(declared: ChannelGraph, traced: ChannelGraph) -> str | None:
    """A sentence naming the first way ``declared`` differs from ``traced``, or ``None``.

    Groups are matched through their members (names may differ); members compare as
    ``(path, axis, spatial)``; layers by kernel path (when the declared graph has any).
    """
    where = {_key(m): g for g in traced.groups for m in g.members}
    mapping: dict[str, str] = {}
    for g in declared.groups:
        hits = [where[_key(m)] for m in g.members if _key(m) in where]
        if not hits:
            return (f"declared group {g.name!r} matches no group of the model (its members "
                    f"{[_show(m) for m in g.members[:3]]} index no traced channels)")
        t = hits[0]
        if t.name in mapping.values():
            other = next(k for k, v in mapping.items() if v == t.name)
            return (f"declared groups {other!r} and {g.name!r} are one group of the model "
                    f"({t.name!r})")
        mapping[g.name] = t.name
        dm = {_key(m): m for m in g.members}
        tm = {_key(m): m for m in t.members}
        for m in g.members:
            k = _key(m)
            if k not in tm:
                owner = where.get(k)
                held = f"the model's group {owner.name!r}" if owner else "no group of the model"
                return f"declared group {g.name!r} has member {_show(m)}, which {held} holds"
            if tm[k].spatial != m.spatial:
                return (f"declared group {g.name!r}: member {_show(m)} has spatial {m.spatial}, "
                        f"the model's {tm[k].spatial}")
        for m in t.members:
            if _key(m) not in dm:
                return (f"declared group {g.name!r} lacks member {_show(m)}, which the model's "
                        f"group {t.name!r} holds")
        if g.size != t.size:
            return f"declared group {g.name!r} has size {g.size}, the model's {t.size}"
        if g.fixed != t.fixed and (t.fixed or g.name in ("in", "out")):
            return (f"declared group {g.name!r} has fixed={g.fixed}, the model's group "
                    f"{t.name!r} fixed={t.fixed}")
    unmatched = [t for t in traced.groups if t.name not in mapping.values()]
    if unmatched:
        t = unmatched[0]
        return (f"the model's group {t.name!r} (size {t.size}, members "
                f"{[_show(m) for m in t.members[:3]]}) is missing from the declared graph")
    back = {v: k for k, v in mapping.items()}
    tl = {x.path: x for x in traced.layers}
    for layer in declared.layers:
        name = "/".join(layer.path)
        t = tl.get(layer.path)
        if t is None:
            return f"declared layer {name} is not a layer of the model"
        for f in ("in_group", "out_group"):
            if back.get(getattr(t, f)) != getattr(layer, f):
                return (f"layer {name}: declared {f} {getattr(layer, f)!r}, the model's is "
                        f"{back.get(getattr(t, f), getattr(t, f))!r}")
        for f in _LAYER_FIELDS:
            if getattr(layer, f) != getattr(t, f):
                return f"layer {name}: declared {f} {getattr(layer, f)!r}, the model's is " \
                       f"{getattr(t, f)!r}"
        for f in _OPTIONAL_FIELDS:
            d = getattr(layer, f)
            if d != getattr(Layer, f, None) and d not in ((), None) and d != getattr(t, f):
                return f"layer {name}: declared {f} {d!r}, the model's is {getattr(t, f)!r}"
    dl = {x.path for x in declared.layers}
    for t in traced.layers if declared.layers else ():  # a groups-only graph declares none
        if t.path not in dl:
            return f"the model's layer {'/'.join(t.path)} ({t.kind}) is missing from the " \
                   "declared graph"
    return None


def check(graph: ChannelGraph, apply_fn: Callable, variables: Mapping, x: Any) -> None:
    """Trace ``apply_fn`` and compare with the declared ``graph``.

    Args:
        graph: the hand-declared graph.
        apply_fn: ``apply_fn(variables, x) -> logits`` (eval mode).
        variables: the variables tree.
        x: an example batch.

    Raises:
        ValueError: naming the first difference (group, member, or layer field).
        subnets.graph.TraceError: the model cannot be traced at all.
    """
    from subnets.graph.trace import trace

    diff = first_difference(graph, trace(apply_fn, variables, x))
    if diff is not None:
        raise ValueError(diff)
