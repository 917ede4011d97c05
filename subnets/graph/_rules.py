"""Per-primitive rules of the tracer: how axes join (union-find) and which program op results."""

from __future__ import annotations

import math
from typing import Any

from subnets.graph._flat import Eqn, Lit
from subnets.graph._norms import NormMatch
from subnets.graph._uf import reshape_blocks

ELEMENTWISE = frozenset((
    "add", "sub", "mul", "div", "max", "min", "pow", "integer_pow", "rsqrt", "sqrt", "exp",
    "exp2", "log", "log1p", "expm1", "tanh", "logistic", "neg", "abs", "sign", "square",
    "select_n", "convert_element_type", "clamp", "erf", "erfc", "erf_inv", "copy", "copy_p",
    "reduce_precision", "and", "or", "not", "xor", "eq", "ne", "lt", "gt", "le", "ge", "sin",
    "cos", "tan", "floor", "ceil", "round", "atan2", "rem", "cbrt", "is_finite", "nextafter",
    "stop_gradient", "real", "imag",
))
ALIASES = frozenset(("convert_element_type", "copy", "copy_p", "reduce_precision",
                     "stop_gradient"))
ACTIVATIONS = {"tanh": "tanh", "logistic": "sigmoid"}
REDUCTIONS = frozenset(("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax",
                        "argmin", "reduce_and", "reduce_or"))
HINT = ("declare the graph by hand (subnets.graph.ChannelGraph, verified with "
        "subnets.graph.check), or keep this operation out of the traced apply")
_NO_AXES = frozenset(("iota", "rng_bit_generator", "random_seed", "random_bits", "random_wrap",
                      "random_unwrap", "threefry2x32"))


class TraceError(ValueError):
    """The model uses something the tracer cannot turn into a channel graph."""


class LayerRec:
    """A layer seen during the walk (groups are known only at the end)."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


# ----------------------------------------------------------------------- union-find rules
def axes(t: Any, e: Eqn) -> None:
    """Join the axes ``e`` ties together."""
    p = e.prim
    outs = [v for v in e.outs]
    vs = e.vars()
    if not vs or p in _NO_AXES:
        return
    out = outs[0]
    oshape = t.shape(out)
    if p in ELEMENTWISE:
        for v in vs:
            s = t.shape(v)
            if len(s) != len(oshape):
                continue
            for i, (a, b) in enumerate(zip(s, oshape, strict=True)):
                if a == b and (a > 1 or (t.is_act(v) and t.is_act(out))):
                    t.join(v, i, out, i)
    elif p == "broadcast_in_dim":
        v = e.ins[0]
        s = t.shape(v)
        for i, d in enumerate(e.params["broadcast_dimensions"]):
            if s[i] == oshape[d] and (s[i] > 1 or t.is_act(v)):
                t.join(v, i, out, d)
    elif p == "reshape":
        _reshape_axes(t, e)
    elif p == "squeeze":
        v = e.ins[0]
        dims = {d % len(t.shape(v)) for d in e.params["dimensions"]}
        kept = [i for i in range(len(t.shape(v))) if i not in dims]
        for o, i in enumerate(kept):
            t.join(v, i, out, o)
    elif p == "expand_dims":
        raise t.err(e, "expand_dims is not supported")
    elif p == "transpose":
        v = e.ins[0]
        for o, i in enumerate(e.params["permutation"]):
            t.join(v, i, out, o)
    elif p in REDUCTIONS:
        v = e.ins[0]
        red = set(e.params["axes"])
        kept = [i for i in range(len(t.shape(v))) if i not in red]
        for o, i in enumerate(kept):
            t.join(v, i, out, o)
    elif p == "dot_general":
        _dot_axes(t, e)
    elif p == "conv_general_dilated":
        _conv_axes(t, e)
    elif p.startswith("reduce_window"):
        v = e.ins[0]
        s = t.shape(v)
        pad = e.params.get("padding", ((0, 0),) * len(s))
        for i in range(len(s)):
            if (e.params["window_dimensions"][i] == 1 and e.params["window_strides"][i] == 1
                    and tuple(pad[i]) == (0, 0)):
                t.join(v, i, out, i)
    elif p == "pad":
        v = e.ins[0]
        for i, cfg in enumerate(e.params["padding_config"]):
            if tuple(cfg) == (0, 0, 0):
                t.join(v, i, out, i)
    else:
        raise t.err(e, "this primitive has no channel rule")


def _reshape_axes(t: Any, e: Eqn) -> None:
    v, out = e.ins[0], e.outs[0]
    s, o = t.shape(v), t.shape(out)
    try:
        blocks = reshape_blocks(s, o)
    except ValueError as err:
        raise t.err(e, str(err)) from None
    for ins, outs in blocks:
        if len(ins) == 1 and len(outs) == 1:
            t.join(v, ins[0], out, outs[0])
        elif len(ins) > 1 and len(outs) == 1:
            chans = [i for i in ins if t.uf.has(t.node(v, i), "channel")]
            if not chans:
                continue
            if len(chans) > 1 or chans[0] != ins[-1]:
                raise t.err(e, f"reshape {s} -> {o} merges channel axes {chans} of {ins} in an "
                               "order other than (spatial..., channels)")
            t.join(v, ins[-1], out, outs[0])   # the (spatial, C) view: spatial from the sizes
        elif len(ins) == 1 and len(outs) > 1:
            if t.uf.has(t.node(v, ins[0]), "channel") and e.index not in t.split_ok:
                raise t.err(e, f"reshape {s} -> {o} splits channel axis {ins[0]} outside a "
                               "recognised GroupNorm")
        elif ins and outs:
            raise t.err(e, f"reshape {s} -> {o} regroups axes {ins} into {outs}")


def _dot_axes(t: Any, e: Eqn) -> None:
    a, b = e.ins
    if not (isinstance(a, int) and isinstance(b, int)):
        raise t.err(e, "a contraction with a literal operand")
    out = e.outs[0]
    (lc, rc), (lb, rb) = e.params["dimension_numbers"]
    for i, j in zip(lc, rc, strict=True):
        t.join(a, i, b, j)
        t.uf.flag(t.node(a, i), "channel")
    k = 0
    for i, j in zip(lb, rb, strict=True):
        t.join(a, i, b, j)
        t.join(a, i, out, k)
        k += 1
    for v, skip in ((a, set(lc) | set(lb)), (b, set(rc) | set(rb))):
        for i in range(len(t.shape(v))):
            if i not in skip:
                t.join(v, i, out, k)
                if not t.is_act(v):
                    t.uf.flag(t.node(out, k), "channel")
                k += 1


def _conv_axes(t: Any, e: Eqn) -> None:
    lhs, rhs = e.ins
    out = e.outs[0]
    dn = e.params["dimension_numbers"]
    ls, rs, os = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    t.join(lhs, ls[0], out, os[0])
    fgc = e.params["feature_group_count"]
    cin, kin, kout = t.shape(lhs)[ls[1]], t.shape(rhs)[rs[1]], t.shape(rhs)[rs[0]]
    if e.params.get("batch_group_count", 1) != 1:
        raise t.err(e, "batch_group_count != 1")
    if fgc == 1:
        t.join(lhs, ls[1], rhs, rs[1])
        t.join(rhs, rs[0], out, os[1])
    elif fgc == cin and kin == 1 and kout == cin:
        t.join(lhs, ls[1], rhs, rs[0])
        t.join(rhs, rs[0], out, os[1])
    else:
        raise t.err(e, f"grouped convolution (feature_group_count={fgc}, {cin} input and "
                       f"{kout} output channels) that is not depthwise")
    t.uf.flag(t.node(lhs, ls[1]), "channel")
    t.uf.flag(t.node(out, os[1]), "channel")


# ----------------------------------------------------------------------- program rules
def _lit(v: Any) -> float | None:
    return v.scalar() if isinstance(v, Lit) else None


def _sole(t: Any, v: int) -> Eqn | None:
    users = t.flat.users(v)
    return users[0] if len(users) == 1 else None


def op(t: Any, e: Eqn) -> None:
    """Turn activation equation ``e`` into a program op (or an alias)."""
    p, ins = e.prim, e.ins
    acts = [v for v in ins if t.is_act(v)]
    if p in ("dot_general", "conv_general_dilated"):
        _layer(t, e)
    elif p in ALIASES:
        t.alias(ins[0], e.outs[0])
    elif p == "add" and len(acts) == 2:
        a, b = (t.value(e, v) for v in ins)
        t.emit("add", (a, b), t.vaxis[a], out_flat=e.outs[0])
    elif p == "add" and len(acts) == 1:
        _bias(t, e, acts[0])
    elif p == "max" and len(acts) == 1 and any(_lit(v) == 0.0 for v in ins):
        v = t.value(e, acts[0])
        t.emit("act", (v,), t.vaxis[v], out_flat=e.outs[0], attrs={"name": "relu"})
    elif p == "min" and len(acts) == 1 and any(_lit(v) == 6.0 for v in ins) and _relu6(t, e):
        pass
    elif p in ACTIVATIONS:
        v = t.value(e, ins[0])
        t.emit("act", (v,), t.vaxis[v], out_flat=e.outs[0], attrs={"name": ACTIVATIONS[p]})
    elif p == "reshape":
        _reshape_op(t, e)
    elif p == "squeeze":
        _squeeze_op(t, e)
    elif p == "reduce_sum":
        _mean_op(t, e)
    elif p == "reduce_window_max":
        _pool_op(t, e, "max_pool", [])
    elif p == "reduce_window_sum":
        user = _sole(t, e.outs[0])
        count = math.prod(e.params["window_dimensions"])
        if user is None or user.prim != "div" or _lit(user.ins[1]) != float(count):
            raise t.err(e, "a windowed sum not divided by its window size (avg_pool with "
                           "count_include_pad=True is supported)")
        _pool_op(t, e, "avg_pool", [user])
    elif p in ("sub", "mul", "div") and len(acts) == 1:
        raise t.err(e, "an elementwise op between an activation and a constant or parameter "
                       "outside a recognised bias / norm pattern")
    else:
        raise t.err(e, "this operation on activations is not supported")


def _relu6(t: Any, e: Eqn) -> bool:
    (src,) = [v for v in e.ins if t.is_act(v)]
    if src not in t.pv or len(t.flat.users(src)) != 1:
        return False
    last = t.ops[-1]
    if last["kind"] != "act" or last["attrs"].get("name") != "relu" or \
            last["output"] != t.pv[src]:
        return False
    last["attrs"]["name"] = "relu6"
    t.alias(src, e.outs[0])
    return True


def _layer(t: Any, e: Eqn) -> None:
    a, b = e.ins
    out = e.outs[0]
    acts = [v for v in (a, b) if t.is_act(v)]
    if len(acts) != 1:
        raise t.err(e, "a contraction of two activations (attention-like)")
    x = acts[0]
    w = b if x == a else a
    o = t.origin.get(w) if isinstance(w, int) else None
    if o is None or any(ax is None for ax in o[1]) or len(o[1]) != len(t.shape(t.leaf_vars[o[0]])):
        raise t.err(e, "the kernel is not a parameter array (or a dtype conversion of one)")
    leaf, axmap = o
    kvar = t.leaf_vars[leaf]
    xs = t.shape(x)
    if e.prim == "dot_general":
        (lc, rc), (lb, rb) = e.params["dimension_numbers"]
        if lb or rb:
            raise t.err(e, "a batched contraction")
        xc, wc = (lc, rc) if x == a else (rc, lc)
        wfree = [i for i in range(len(t.shape(w))) if i not in wc]
        if len(wc) != 1 or len(wfree) != 1:
            raise t.err(e, "a dense kernel must contract one axis and keep one")
        xfree = [i for i in range(len(xs)) if i not in xc]
        axis = len(xfree) if x == a else 0
        rec = LayerRec(kind="dense", leaf=leaf, in_axis=axmap[wc[0]], out_axis=axmap[wfree[0]],
                       x=x, out=out, x_free=tuple(xfree), kernel_size=(), stride=(),
                       padding=(), in_spatial=(), out_spatial=(), feature_groups=1, bias=None,
                       spatial_axes=())
        attrs = {"dimension_numbers": ((tuple(lc), tuple(rc)), ((), ())),
                 "kernel_first": x != a}
    else:
        if x != a:
            raise t.err(e, "the kernel is the convolution's first operand")
        dn = e.params["dimension_numbers"]
        ls, rs, os = tuple(dn.lhs_spec), tuple(dn.rhs_spec), tuple(dn.out_spec)
        if any(d != 1 for d in e.params["lhs_dilation"]):
            raise t.err(e, "a transposed (input-dilated) convolution")
        fgc = e.params["feature_group_count"]
        ws = t.shape(w)
        depthwise = fgc > 1
        rec = LayerRec(
            kind="depthwise" if depthwise else "conv", leaf=leaf,
            in_axis=axmap[rs[0]] if depthwise else axmap[rs[1]], out_axis=axmap[rs[0]],
            x=x, out=out, x_free=(), kernel_size=tuple(ws[d] for d in rs[2:]),
            stride=tuple(e.params["window_strides"]),
            padding=tuple(tuple(int(q) for q in pq) for pq in e.params["padding"]),
            in_spatial=tuple(xs[d] for d in ls[2:]),
            out_spatial=tuple(t.shape(out)[d] for d in os[2:]), feature_groups=fgc, bias=None,
            spatial_axes=tuple(axmap[d] for d in rs[2:]))
        axis = os[1]
        attrs = {"dimension_numbers": (ls, rs, os), "window_strides": rec.stride,
                 "padding": rec.padding, "rhs_dilation": tuple(e.params["rhs_dilation"]),
                 "depthwise": depthwise}
    rec.path = t.paths[leaf]
    rec.kvar = kvar
    rec.axis = axis
    t.layers.append(rec)
    t.layer_by_out[out] = rec
    rec.value = t.emit("layer", (t.value(e, x),), axis, out_flat=out, ref=rec.path, attrs=attrs)
    rec.op = len(t.ops) - 1


def _bias(t: Any, e: Eqn, x: int) -> None:
    w = e.ins[1] if e.ins[0] == x else e.ins[0]
    rec = t.layer_by_out.get(x)
    leaf = t.leaf(w)
    if (rec is None or rec.bias is not None or leaf is None or len(t.flat.users(x)) != 1
            or len(t.shape(t.leaf_vars[leaf])) != 1):
        raise t.err(e, "an add of a parameter that is not the bias of the layer just before")
    o = t.origin[w][1]
    if o.count(0) != 1 or o.index(0) != rec.axis:
        raise t.err(e, "a bias not aligned with the layer's output channels")
    rec.bias = leaf
    t.uf.union(t.node(t.leaf_vars[leaf], 0), t.node(x, rec.axis))
    t.alias(x, e.outs[0])
    t.layer_by_out[e.outs[0]] = rec
    t.ops[rec.op]["attrs"]["bias"] = True


def _flatten_range(s: tuple, o: tuple) -> tuple[int, int] | None:
    """``(a, b)`` if ``o`` is ``s`` with axes ``a..b`` merged into one."""
    r = len(o)
    if r >= len(s) or r < 1:
        return None
    for p in range(r):
        q = r - 1 - p
        b = len(s) - q - 1
        if s[:p] == o[:p] and s[b + 1 :] == o[p + 1 :] and math.prod(s[p : b + 1]) == o[p]:
            return p, b
    return None


def _reshape_op(t: Any, e: Eqn) -> None:
    v, out = e.ins[0], e.outs[0]
    s, o = t.shape(v), t.shape(out)
    if s == o:
        t.alias(v, out)
        return
    rng = _flatten_range(s, o)
    if rng is None:
        raise t.err(e, f"a reshape {s} -> {o} that is not a flatten of adjacent axes")
    _flatten(t, e, v, out, rng)


def _squeeze_op(t: Any, e: Eqn) -> None:
    v, out = e.ins[0], e.outs[0]
    s = t.shape(v)
    dims = sorted(d % len(s) for d in e.params["dimensions"])
    if dims != list(range(dims[0], dims[-1] + 1)) or dims[-1] + 1 >= len(s):
        raise t.err(e, "a squeeze of non-adjacent axes")
    _flatten(t, e, v, out, (dims[0], dims[-1] + 1))


def _flatten(t: Any, e: Eqn, v: int, out: int, rng: tuple[int, int]) -> None:
    x = t.value(e, v)
    a, b = rng
    ax = t.vaxis[x]
    if ax is not None and a <= ax <= b and ax != b:
        raise t.err(e, "a flatten with the channel axis before spatial axes")
    new = None if ax is None else (a if a <= ax <= b else ax if ax < a else ax - (b - a))
    t.emit("flatten", (x,), new, out_flat=out, attrs={"axes": (a, b)})


def _mean_op(t: Any, e: Eqn) -> None:
    v = e.ins[0]
    red = tuple(sorted(e.params["axes"]))
    x = t.value(e, v)
    chain, cur, keep = [], e.outs[0], False
    user = _sole(t, cur)
    if user is not None and user.prim == "broadcast_in_dim":
        chain.append(user)
        keep = True
        cur = user.outs[0]
        user = _sole(t, cur)
    count = math.prod(t.shape(v)[i] for i in red)
    if user is None or user.prim != "div" or _lit(user.ins[1]) != float(count):
        raise t.err(e, "a sum over axes not divided by their size (only means are supported)")
    chain.append(user)
    ax = t.vaxis[x]
    if ax is not None and ax in red:
        raise t.err(e, "a mean over the channel axis")
    new = None if ax is None else (ax if keep else ax - sum(1 for i in red if i < ax))
    t.done.update(c.index for c in chain)
    t.emit("mean", (x,), new, out_flat=user.outs[0], attrs={"axes": red, "keepdims": keep})


def _pool_op(t: Any, e: Eqn, kind: str, chain: list[Eqn]) -> None:
    x = t.value(e, e.ins[0])
    pr = e.params
    if any(d != 1 for d in pr.get("base_dilation", ())) or \
            any(d != 1 for d in pr.get("window_dilation", ())):
        raise t.err(e, "a dilated pooling window")
    out = chain[-1].outs[0] if chain else e.outs[0]
    t.done.update(c.index for c in chain)
    t.emit(kind, (x,), t.vaxis[x], out_flat=out,
           attrs={"window": tuple(pr["window_dimensions"]), "stride": tuple(pr["window_strides"]),
                  "padding": tuple(tuple(int(q) for q in pq) for pq in pr["padding"])})


def norm(t: Any, m: NormMatch) -> None:
    """Emit a norm op for the recognised pattern ``m``."""
    e = t.flat.eqns[m.last]
    x = t.value(e, m.x)
    for leaf in (m.scale, m.shift, m.mean, m.var):
        if leaf is not None:
            t.uf.union(t.node(t.leaf_vars[leaf], 0), t.node(m.x, m.axis))
    rank = len(t.shape(m.x))
    for i in range(rank):
        t.join(m.x, i, m.y, i)
    t.norms.append((m, len(t.ops)))
    t.emit("norm", (x,), m.axis, out_flat=m.y,
           attrs={"axis": m.axis, "stat_axes": m.stat_axes})
