"""JSON-safe form of a :class:`~subnets.graph.ChannelGraph`, validated and bounded on load.

A saved family or portfolio stores its graph this way, so loading needs no model code. Loading
checks every field's type and bounds before building anything: a forged dict gives a ValueError
naming the field, never a huge allocation (nothing is allocated from a size field).

Example:
    >>> from subnets.graph import ChannelGraph, Group, Member
    >>> g = ChannelGraph((Group("h", 3, (Member(("d", "kernel"), 1),)),))
    >>> ChannelGraph.from_dict(g.to_dict()) == g
    True

References:
    The JSON data interchange syntax (ECMA-404).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from subnets.graph.types import ChannelGraph, Group, Layer, Member, Norm, Op

VERSION = 1
MAX_ITEMS = 1_000_000      # list lengths (members, layers, ops, shapes)
MAX_INT = 2**40            # sizes, axes, positions
MAX_STR = 1_000
MAX_DEPTH = 64             # path length, attr nesting


def _path(p: Any) -> list | None:
    return None if p is None else list(p)


def _attr_json(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_attr_json(x) for x in v]
    return v


def to_dict(graph: ChannelGraph) -> dict:
    """The graph as plain lists, dicts, strings and numbers."""
    return {
        "version": VERSION,
        "groups": [{"name": g.name, "size": g.size, "fixed": g.fixed,
                    "members": [{"path": list(m.path), "axis": m.axis, "spatial": m.spatial,
                                 "role": m.role, "layer": _path(m.layer)} for m in g.members]}
                   for g in graph.groups],
        "layers": [{"path": list(x.path), "kind": x.kind, "in_group": x.in_group,
                    "out_group": x.out_group, "positions": x.positions, "window": x.window,
                    "in_positions": x.in_positions, "kernel_size": list(x.kernel_size),
                    "stride": list(x.stride), "padding": [list(p) for p in x.padding],
                    "in_spatial": list(x.in_spatial), "out_spatial": list(x.out_spatial),
                    "feature_groups": x.feature_groups, "bias": _path(x.bias),
                    "norm": _path(x.norm), "activation": x.activation} for x in graph.layers],
        "norms": [{"id": list(n.id), "group": n.group, "scale": _path(n.scale),
                   "shift": _path(n.shift), "mean": _path(n.mean), "var": _path(n.var),
                   "epsilon": n.epsilon, "momentum": n.momentum,
                   "mixes_channels": n.mixes_channels, "num_groups": n.num_groups}
                  for n in graph.norms],
        "program": [{"kind": o.kind, "inputs": list(o.inputs), "output": o.output,
                     "ref": _path(o.ref), "group": o.group, "spatial": list(o.spatial),
                     "attrs": [[k, _attr_json(v)] for k, v in o.attrs]} for o in graph.program],
        "shapes": [[list(p), list(s)] for p, s in graph.shapes],
        "input_shape": list(graph.input_shape),
    }


class _Reader:
    """Typed, bounded field access that names the offending field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field: str, msg: str) -> ValueError:
        return ValueError(f"graph dict: {self.where}{field}: {msg}")

    def get(self, d: Any, key: str, kind: str, *, optional: bool = False, default: Any = None):
        if not isinstance(d, Mapping):
            raise self.fail("", f"expected an object, got {type(d).__name__}")
        if key not in d:
            if optional:
                return default
            raise self.fail(key, "missing")
        v = d[key]
        if v is None and optional:
            return default
        return getattr(self, kind)(v, key)

    def str(self, v: Any, f: str) -> str:
        if not isinstance(v, str) or len(v) > MAX_STR:
            raise self.fail(f, f"expected a string of <= {MAX_STR} chars, got {v!r:.60}")
        return v

    def int(self, v: Any, f: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_INT:
            raise self.fail(f, f"expected an integer in [0, {MAX_INT}], got {v!r:.60}")
        return v

    def bool(self, v: Any, f: str) -> bool:
        if not isinstance(v, bool):
            raise self.fail(f, f"expected true/false, got {v!r:.60}")
        return v

    def float(self, v: Any, f: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not abs(v) < 1e30:
            raise self.fail(f, f"expected a finite number, got {v!r:.60}")
        return float(v)

    def list(self, v: Any, f: str, limit: int = MAX_ITEMS) -> list:
        if not isinstance(v, list) or len(v) > limit:
            raise self.fail(f, f"expected a list of <= {limit} items, got {type(v).__name__}")
        return v

    def path(self, v: Any, f: str) -> tuple[str, ...]:
        return tuple(self.str(k, f) for k in self.list(v, f, MAX_DEPTH))

    def ints(self, v: Any, f: str) -> tuple[int, ...]:
        return tuple(self.int(k, f) for k in self.list(v, f, MAX_DEPTH))

    def pairs(self, v: Any, f: str) -> tuple[tuple[int, int], ...]:
        out = []
        for p in self.list(v, f, MAX_DEPTH):
            p = self.list(p, f, 2)
            if len(p) != 2:
                raise self.fail(f, "expected (lo, hi) pairs")
            out.append((self.int(p[0], f), self.int(p[1], f)))
        return tuple(out)

    def attr(self, v: Any, f: str, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(f, "nested too deeply")
        if isinstance(v, list):
            return tuple(self.attr(x, f, depth + 1) for x in self.list(v, f, 4096))
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, int):
            if abs(v) > MAX_INT:
                raise self.fail(f, f"integer {v} out of range")
            return v
        if isinstance(v, float):
            return self.float(v, f)
        return self.str(v, f)


def from_dict(d: Mapping) -> ChannelGraph:
    """Rebuild a graph from :func:`to_dict` output.

    Raises:
        ValueError: naming the first malformed field (wrong type, out of bounds, unknown group,
            unknown role or kind).
    """
    r = _Reader("")
    if not isinstance(d, Mapping):
        raise ValueError(f"graph dict: expected an object, got {type(d).__name__}")
    version = r.get(d, "version", "int")
    if version != VERSION:
        raise ValueError(f"graph dict: version {version} not supported (expected {VERSION})")
    groups = []
    for i, gd in enumerate(r.get(d, "groups", "list")):
        r.where = f"groups[{i}]."
        members = []
        for j, md in enumerate(r.get(gd, "members", "list")):
            r.where = f"groups[{i}].members[{j}]."
            members.append(Member(r.get(md, "path", "path"), r.get(md, "axis", "int"),
                                  r.get(md, "spatial", "int", optional=True, default=1),
                                  r.get(md, "role", "str", optional=True, default="out"),
                                  r.get(md, "layer", "path", optional=True)))
        r.where = f"groups[{i}]."
        groups.append(Group(r.get(gd, "name", "str"), r.get(gd, "size", "int"), tuple(members),
                            r.get(gd, "fixed", "bool", optional=True, default=False)))
    layers = []
    for i, ld in enumerate(r.get(d, "layers", "list", optional=True, default=[])):
        r.where = f"layers[{i}]."
        layers.append(Layer(
            r.get(ld, "path", "path"), r.get(ld, "kind", "str"), r.get(ld, "in_group", "str"),
            r.get(ld, "out_group", "str"),
            *(r.get(ld, k, "int", optional=True, default=1)
              for k in ("positions", "window", "in_positions")),
            *(r.get(ld, k, "ints", optional=True, default=()) for k in ("kernel_size", "stride")),
            r.get(ld, "padding", "pairs", optional=True, default=()),
            *(r.get(ld, k, "ints", optional=True, default=())
              for k in ("in_spatial", "out_spatial")),
            r.get(ld, "feature_groups", "int", optional=True, default=1),
            r.get(ld, "bias", "path", optional=True), r.get(ld, "norm", "path", optional=True),
            r.get(ld, "activation", "str", optional=True)))
    norms = []
    for i, nd in enumerate(r.get(d, "norms", "list", optional=True, default=[])):
        r.where = f"norms[{i}]."
        norms.append(Norm(
            r.get(nd, "id", "path"), r.get(nd, "group", "str"),
            *(r.get(nd, k, "path", optional=True) for k in ("scale", "shift", "mean", "var")),
            r.get(nd, "epsilon", "float"), r.get(nd, "momentum", "float", optional=True),
            r.get(nd, "mixes_channels", "bool", optional=True, default=False),
            r.get(nd, "num_groups", "int", optional=True)))
    program = []
    for i, od in enumerate(r.get(d, "program", "list", optional=True, default=[])):
        r.where = f"program[{i}]."
        attrs = []
        for a in r.get(od, "attrs", "list", optional=True, default=[]):
            a = r.list(a, "attrs", 2)
            if len(a) != 2:
                raise r.fail("attrs", "expected [key, value] pairs")
            attrs.append((r.str(a[0], "attrs"), r.attr(a[1], "attrs")))
        program.append(Op(r.get(od, "kind", "str"), r.get(od, "inputs", "ints"),
                          r.get(od, "output", "int"), r.get(od, "ref", "path", optional=True),
                          r.get(od, "group", "str", optional=True),
                          r.get(od, "spatial", "ints", optional=True, default=()),
                          tuple(sorted(attrs))))
    r.where = ""
    shapes = []
    for s in r.get(d, "shapes", "list", optional=True, default=[]):
        s = r.list(s, "shapes", 2)
        if len(s) != 2:
            raise r.fail("shapes", "expected [path, shape] pairs")
        shapes.append((r.path(s[0], "shapes"), r.ints(s[1], "shapes")))
    input_shape = r.get(d, "input_shape", "ints", optional=True, default=())
    try:
        return ChannelGraph(tuple(groups), tuple(layers), tuple(norms), tuple(program),
                            tuple(shapes), input_shape)
    except (KeyError, ValueError) as e:
        raise ValueError(f"graph dict: {e}") from None
