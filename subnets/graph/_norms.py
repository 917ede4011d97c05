"""Recognise norm layers in a flattened jaxpr.

Every norm the tracer knows ends in ``(x - mean) * rsqrt(var + eps) [* scale] [+ shift]``, the
order Flax's ``_normalize`` uses. With ``mean``/``var`` read from parameters it is an eval-mode
BatchNorm; with ``mean``/``var`` computed from ``x`` itself it is a batch-statistics norm
(GroupNorm, InstanceNorm, LayerNorm), whose statistics region may split the channel axis into
``(groups, channels per group)``: the one channel-splitting reshape the tracer accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from subnets.graph._flat import Eqn, Flat, Lit
from subnets.graph._uf import reshape_blocks


@dataclass
class NormMatch:
    x: int                      # value normalised
    y: int                      # value out
    eps: float
    scale: int | None = None    # leaf indices
    shift: int | None = None
    mean: int | None = None
    var: int | None = None
    axis: int = -1              # channel axis of x
    num_groups: int | None = None
    stat_axes: tuple[int, ...] = ()
    eqns: set[int] = field(default_factory=set)   # absorbed activation equations
    split: set[int] = field(default_factory=set)  # the channel-splitting reshapes inside
    last: int = -1              # index of the equation writing y


def _sole_user(flat: Flat, v: int) -> Eqn | None:
    users = flat.users(v)
    return users[0] if len(users) == 1 else None


_SHAPE_ONLY = ("broadcast_in_dim", "reshape", "convert_element_type", "squeeze", "expand_dims")


def _through(flat: Flat, v: int, inner: set[int]) -> int:
    """Follow ``v`` through sole-user shape-only equations (a broadcast of the multiplier)."""
    while True:
        u = _sole_user(flat, v)
        if u is None or u.prim not in _SHAPE_ONLY:
            return v
        inner.add(u.index)
        v = u.outs[0]


def _other(e: Eqn, v: int):
    a, b = e.ins
    return b if a == v else a


def find_norms(flat: Flat, act: set[int], origin: dict) -> list[NormMatch]:
    """Every norm pattern, in program order of its last equation."""
    out = []
    for e in flat.eqns:
        if e.prim != "rsqrt" or not isinstance(e.ins[0], int):
            continue
        m = _match(flat, act, origin, e)
        if m is not None:
            out.append(m)
    out.sort(key=lambda m: m.last)
    return out


def _leaf(origin: dict, v) -> int | None:
    o = origin.get(v) if isinstance(v, int) else None
    return None if o is None else o[0]


def _param_axis(origin: dict, v, rank: int) -> int | None:
    """Axis of a broadcast 1-D parameter ``v`` (rank ``rank``) that carries its channels."""
    o = origin.get(v) if isinstance(v, int) else None
    if o is None:
        return None
    leaf, axmap = o
    hits = [i for i, a in enumerate(axmap) if a == 0]
    return hits[0] if len(hits) == 1 and len(axmap) == rank else None


def _match(flat: Flat, act: set[int], origin: dict, rs: Eqn) -> NormMatch | None:
    prod = flat.producer.get(rs.ins[0])
    if prod is None:
        return None
    pe = flat.eqns[prod]
    if pe.prim != "add" or not any(isinstance(v, Lit) for v in pe.ins):
        return None
    (lit,) = [v for v in pe.ins if isinstance(v, Lit)]
    (var_v,) = [v for v in pe.ins if not isinstance(v, Lit)] or [None]
    if var_v is None or lit.scalar() is None:
        return None
    eps = lit.scalar()
    scale, inner = None, {pe.index, rs.index}
    r = _through(flat, rs.outs[0], inner)
    mul = _sole_user(flat, r)
    if mul is None or mul.prim != "mul":
        return None
    other = _other(mul, r)
    if isinstance(other, int) and other not in act:   # rsqrt(...) * scale
        scale = other
        inner.add(mul.index)
        r = _through(flat, mul.outs[0], inner)
        mul = _sole_user(flat, r)
        if mul is None or mul.prim != "mul":
            return None
    centred = _other(mul, r)
    sub_i = flat.producer.get(centred) if isinstance(centred, int) else None
    if sub_i is None or flat.eqns[sub_i].prim != "sub" or centred not in act:
        return None
    sub = flat.eqns[sub_i]
    x, mu = sub.ins
    if not isinstance(x, int) or x not in act or len(flat.users(centred)) != 1:
        return None
    y, eqns, last = mul.outs[0], {sub.index, mul.index} | inner, mul.index
    shift = None
    add = _sole_user(flat, y)
    if add is not None and add.prim == "add":
        o = _other(add, y)
        if isinstance(o, int) and o not in act and _leaf(origin, o) is not None:
            shift, y, last = o, add.outs[0], add.index
            eqns.add(add.index)
    rank = len(flat.shapes[x])
    m = NormMatch(x=x, y=y, eps=eps, scale=_leaf(origin, scale), shift=_leaf(origin, shift),
                  eqns=eqns, last=last)
    axes = [a for a in (_param_axis(origin, scale, rank), _param_axis(origin, shift, rank))
            if a is not None]
    if var_v not in act:
        if mu in act or _leaf(origin, mu) is None or _leaf(origin, var_v) is None:
            return None
        m.mean, m.var = _leaf(origin, mu), _leaf(origin, var_v)
        axes.append(_param_axis(origin, mu, rank))
        m.axis = next((a for a in axes if a is not None), rank - 1)
        return m
    if not _stats_region(flat, act, x, (mu, var_v), m):
        return None
    if axes:
        m.axis = axes[0]
    return _stats_layout(flat, m, rank)


def _stats_region(flat: Flat, act: set[int], x: int, roots, m: NormMatch) -> bool:
    """Collect the activation equations computing ``roots`` from ``x`` alone."""
    stack, seen = [v for v in roots if isinstance(v, int)], set()
    while stack:
        v = stack.pop()
        if v == x or v not in act or v in seen:
            continue
        seen.add(v)
        p = flat.producer.get(v)
        if p is None:  # reached another input
            return False
        m.eqns.add(p)
        stack.extend(flat.eqns[p].vars())
    return True


def _stats_layout(flat: Flat, m: NormMatch, rank: int) -> NormMatch | None:
    """Groups and reduced axes of a batch-statistics norm, in ``x``'s coordinates."""
    xshape = flat.shapes[m.x]
    reduces = [flat.eqns[i] for i in sorted(m.eqns) if flat.eqns[i].prim == "reduce_sum"]
    if not reduces:
        return None
    red = reduces[0]
    rshape = flat.shapes[red.ins[0]] if isinstance(red.ins[0], int) else ()
    reduced = set(red.params["axes"])
    for i in m.eqns:
        e = flat.eqns[i]
        if e.prim == "reshape" and e.ins[0] == m.x:
            m.split.add(i)
    try:
        blocks = reshape_blocks(xshape, rshape) if len(rshape) != rank else None
    except ValueError:
        return None
    x_reduced, groups = set(), None
    if blocks is None:
        x_reduced = reduced
    else:
        for ins, outs in blocks:
            if len(ins) == 1 and len(outs) >= 1:
                if len(outs) > 1:   # the channel axis split into (groups, per group)
                    m.axis = ins[0]
                    groups = 1
                    for o in outs:
                        if o not in reduced:
                            groups *= rshape[o]
                elif outs[0] in reduced:
                    x_reduced.add(ins[0])
            elif len(ins) > 1:
                return None
    if m.axis < 0:
        m.axis = rank - 1
    c = xshape[m.axis]
    if groups is None:
        groups = 1 if m.axis in x_reduced else c
    x_reduced.discard(m.axis)
    if 0 in x_reduced:
        return None  # statistics over the batch: a train-mode norm
    m.num_groups = groups
    m.stat_axes = tuple(sorted(x_reduced))
    return m
