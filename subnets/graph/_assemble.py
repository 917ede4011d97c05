"""Turn a finished walk (union-find classes, layer records, ops) into a ChannelGraph."""

from __future__ import annotations

import math
from typing import Any

from subnets.graph._rules import TraceError
from subnets.graph.types import ChannelGraph, Group, Layer, Member, Norm, Op, Path

_ROLE_ORDER = {r: i for i, r in enumerate(("out", "depthwise", "bias", "scale", "shift", "mean",
                                           "var", "in"))}


def _module_name(path: Path) -> str:
    inner = path[1:-1] if len(path) > 2 else path[:-1] or path
    return "/".join(inner)


def _norm_id(paths: list[Path], m: Any, k: int) -> Path:
    for leaf in (m.scale, m.shift, m.mean, m.var):
        if leaf is not None:
            return paths[leaf][:-1]
    return (f"norm{k}",)


def assemble(t: Any, *, names: dict[str, str], fixed: tuple[str, ...], momenta: dict,
             input_shape: tuple[int, ...]) -> ChannelGraph:
    uf, paths = t.uf, t.paths
    root = uf.find
    batch = root(t.node(t.x, 0))

    # Classes of layers, in program order; "in" from layers with no layer upstream.
    def cls(v: int, axis: int) -> int:
        return root(t.node(v, axis))

    in_roots = {cls(r.kvar, r.in_axis) for r in t.layers if t.pre[t.ops[r.op]["inputs"][0]]}
    if len(in_roots) > 1:
        raise TraceError(f"trace: the input reaches layers through {len(in_roots)} different "
                         "channel groups; declare the graph by hand")
    out_value = t.ops[-1]["inputs"][0]
    out_axis = t.vaxis[out_value]
    if out_axis is None:
        raise TraceError("trace: the output has no channel axis (does the model end in a "
                         "layer?)")
    out_root = cls(t.vflat[out_value], out_axis)
    order: list[int] = []
    default: dict[int, str] = {}
    for r in in_roots:
        order.append(r)
        default[r] = "in"
    for r in t.layers:
        c = cls(r.kvar, r.out_axis)
        if c not in default and c != out_root and r.kind != "depthwise":
            default[c] = _module_name(r.path)
            order.append(c)
    if out_root in default and default[out_root] == "in":
        raise TraceError("trace: the input's channels reach the output unchanged")
    default[out_root] = "out"
    order.append(out_root)

    # Members: every leaf axis in a channel class.
    roles: dict[tuple[int, int], tuple[str, Path]] = {}
    for r in t.layers:
        if r.kind == "depthwise":
            roles[(r.leaf, r.out_axis)] = ("depthwise", r.path)
        else:
            roles[(r.leaf, r.in_axis)] = ("in", r.path)
            roles[(r.leaf, r.out_axis)] = ("out", r.path)
        if r.bias is not None:
            roles[(r.bias, 0)] = ("bias", r.path)
    norm_ids = []
    for k, (m, _) in enumerate(t.norms):
        nid = _norm_id(paths, m, k)
        norm_ids.append(nid)
        for role in ("scale", "shift", "mean", "var"):
            leaf = getattr(m, role)
            if leaf is not None:
                roles[(leaf, 0)] = (role, nid)
    members: dict[int, list[tuple[int, int, int]]] = {}
    sizes: dict[int, int] = {}
    for n in uf.nodes.values():
        c = root(n)
        if uf.has(c, "channel"):
            sizes[c] = min(sizes.get(c, uf.size[n]), uf.size[n])
    leaf_index = {v: i for i, v in enumerate(t.leaf_vars)}
    for (v, axis), n in uf.nodes.items():
        c = root(n)
        if v in leaf_index and uf.has(c, "channel"):
            members.setdefault(c, []).append((leaf_index[v], axis, uf.size[n]))
    for c in members:
        if c not in default:
            default[c] = f"group{len(order)}"
            order.insert(len(order) - 1, c)
    for c in list(order):
        if c not in members and default[c] not in ("in", "out"):
            order.remove(c)

    # Names: unique defaults, then the caller's renames.
    seen: dict[str, int] = {}
    for c in order:
        base = default[c]
        if base in seen:
            seen[base] += 1
            default[c] = f"{base}_{seen[base]}"
        else:
            seen[base] = 0
    unknown = set(names) - {default[c] for c in order}
    if unknown:
        raise ValueError(f"trace: names= renames unknown groups {sorted(unknown)}; the traced "
                         f"groups are {[default[c] for c in order]}")
    final = {c: names.get(default[c], default[c]) for c in order}
    if len(set(final.values())) != len(final):
        raise ValueError(f"trace: names= gives two groups the same name: {sorted(final.values())}")
    fixed_set = set(fixed)
    bad = fixed_set - set(final.values()) - {default[c] for c in order}
    if bad:
        raise ValueError(f"trace: fixed= names unknown groups {sorted(bad)}; groups are "
                         f"{list(final.values())}")

    groups = []
    for c in order:
        size = sizes.get(c)
        if size is None:  # e.g. the input group when the input reaches no layer directly
            continue
        ms = []
        for leaf, axis, n in sorted(members.get(c, ()), key=lambda q: (q[0], q[1])):
            if n % size:
                raise TraceError(f"trace: {'/'.join(paths[leaf])} axis {axis} has {n} entries, "
                                 f"not a multiple of group {final[c]!r}'s {size} channels")
            role = roles.get((leaf, axis))
            if role is None:
                raise TraceError(f"trace: parameter {'/'.join(paths[leaf])} axis {axis} joins "
                                 f"channel group {final[c]!r} but is not a kernel, bias or norm "
                                 "array; declare the graph by hand")
            ms.append(Member(paths[leaf], axis, n // size, role[0], role[1]))
        ms.sort(key=lambda m: _ROLE_ORDER[m.role])
        groups.append(Group(final[c], size, tuple(ms),
                            fixed=default[c] in ("in", "out") or final[c] in fixed_set
                            or default[c] in fixed_set))

    # Program ops with groups; consumers for the norm/activation that follow a layer.
    def vgroup(value: int) -> str | None:
        ax = t.vaxis.get(value)
        if ax is None:
            return None
        c = cls(t.vflat[value], ax)
        return final.get(c)

    def vspatial(value: int) -> tuple[int, ...]:
        ax = t.vaxis.get(value)
        shape = t.shape(t.vflat[value])
        return tuple(s for i, s in enumerate(shape) if i not in (0, ax))

    norm_at = {op_i: k for k, (_, op_i) in enumerate(t.norms)}
    program = []
    users: dict[int, list[dict]] = {}
    for i, o in enumerate(t.ops):
        for v in o["inputs"]:
            users.setdefault(v, []).append(o)
        ref = norm_ids[norm_at[i]] if i in norm_at else o["ref"]
        if o["kind"] == "norm":
            o["ref"] = ref
        attrs = tuple(sorted(o["attrs"].items()))
        program.append(Op(o["kind"], tuple(o["inputs"]), o["output"], ref,
                          vgroup(o["output"]), vspatial(o["output"]), attrs))

    def follow(value: int, kind: str) -> dict | None:
        us = users.get(value, [])
        return us[0] if len(us) == 1 and us[0]["kind"] == kind else None

    layers = []
    for r in t.layers:
        in_c, out_c = cls(r.kvar, r.in_axis), cls(r.kvar, r.out_axis)
        nxt = follow(r.value, "norm")
        act = follow(nxt["output"] if nxt else r.value, "act")
        if r.kind == "dense":
            size_in = sizes[in_c]
            window = t.shape(r.kvar)[r.in_axis] // size_in
            xs = t.shape(r.x)
            positions = math.prod(xs[d] for d in r.x_free if cls(r.x, d) != batch)
            in_positions = positions * window
        else:
            window = math.prod(r.kernel_size)
            positions = math.prod(r.out_spatial)
            in_positions = math.prod(r.in_spatial)
        layers.append(Layer(
            r.path, r.kind, final[in_c], final[out_c], positions, window, in_positions,
            r.kernel_size, r.stride, r.padding, r.in_spatial, r.out_spatial, r.feature_groups,
            None if r.bias is None else paths[r.bias], nxt["ref"] if nxt else None,
            act["attrs"]["name"] if act else None))

    norms = []
    for k, (m, _) in enumerate(t.norms):
        mean_path = None if m.mean is None else paths[m.mean]
        c = cls(m.x, m.axis)
        if c not in final:
            raise TraceError(
                f"trace: the norm {'/'.join(norm_ids[k])} normalises an axis of size "
                f"{t.shape(m.x)[m.axis]} that no layer's channels reach (a 1-channel axis cannot "
                "be told from broadcasting); widen that layer to 2+ channels or declare the "
                "graph by hand")
        mixes = m.num_groups is not None and m.num_groups < t.shape(m.x)[m.axis]
        norms.append(Norm(norm_ids[k], final[c],
                          *(None if getattr(m, r) is None else paths[getattr(m, r)]
                            for r in ("scale", "shift", "mean", "var")),
                          float(m.eps), momenta.get(mean_path), mixes, m.num_groups))
    shapes = tuple((p, t.shape(v)) for p, v in zip(paths, t.leaf_vars, strict=True))
    return ChannelGraph(tuple(groups), tuple(layers), tuple(norms), tuple(program), shapes,
                        input_shape)
