"""A jaxpr flattened into one list of equations over integer value ids.

Calls (``pjit``, ``closed_call``, ``custom_jvp_call``, ``custom_vjp_call``, ``remat``) are
inlined with their variables renamed, so a pattern spanning a call boundary (``jax.nn.relu`` is
a ``custom_jvp_call`` around a ``pjit`` around ``max``) reads as plain equations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jax._src import source_info_util
from jax._src.core import DropVar, Literal

CALLS = ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
         "custom_vjp_call_jaxpr", "remat", "checkpoint", "custom_lin", "named_call")
_SUB_KEYS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


@dataclass(frozen=True)
class Lit:
    """A literal or closed-over constant."""

    value: Any

    def scalar(self) -> float | None:
        a = np.asarray(self.value)
        return float(a) if a.size == 1 else None


@dataclass
class Eqn:
    index: int
    prim: str
    params: dict
    ins: list           # int ids or Lit
    outs: list[int]
    src: str

    def vars(self) -> list[int]:
        return [v for v in self.ins if isinstance(v, int)]


@dataclass
class Flat:
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    dtypes: list[Any] = field(default_factory=list)
    eqns: list[Eqn] = field(default_factory=list)
    producer: dict[int, int] = field(default_factory=dict)
    consumers: dict[int, list[int]] = field(default_factory=dict)
    invars: list[int] = field(default_factory=list)
    outvars: list[Any] = field(default_factory=list)

    def new(self, aval: Any) -> int:
        self.shapes.append(tuple(int(d) for d in getattr(aval, "shape", ())))
        self.dtypes.append(getattr(aval, "dtype", None))
        return len(self.shapes) - 1

    def users(self, v: int) -> list[Eqn]:
        return [self.eqns[i] for i in self.consumers.get(v, ())]


def summarize(source_info: Any) -> str:
    try:
        return source_info_util.summarize(source_info)
    except Exception:  # noqa: BLE001 - source info is best effort
        return "<unknown source>"


def _sub_jaxpr(eqn: Any) -> tuple[Any, tuple] | None:
    for key in _SUB_KEYS:
        sub = eqn.params.get(key)
        if sub is None or callable(sub) and not hasattr(sub, "eqns") and not hasattr(sub, "jaxpr"):
            continue
        if hasattr(sub, "jaxpr") and hasattr(sub, "consts"):  # ClosedJaxpr
            return sub.jaxpr, tuple(sub.consts)
        if hasattr(sub, "eqns"):
            return sub, ()
    return None


def flatten(closed: Any) -> Flat:
    """Flatten a ClosedJaxpr (calls inlined)."""
    flat = Flat()
    jaxpr = closed.jaxpr
    env: dict = {}
    for v, c in zip(jaxpr.constvars, closed.consts, strict=True):
        env[v] = Lit(c)
    for v in jaxpr.invars:
        env[v] = flat.new(v.aval)
        flat.invars.append(env[v])
    _walk(flat, jaxpr, env)
    flat.outvars = [_read(env, v) for v in jaxpr.outvars]
    for e in flat.eqns:
        for v in e.outs:
            flat.producer[v] = e.index
        for v in e.vars():
            flat.consumers.setdefault(v, []).append(e.index)
    return flat


def _read(env: dict, v: Any) -> Any:
    if isinstance(v, Literal):
        return Lit(v.val)
    return env[v]


def _walk(flat: Flat, jaxpr: Any, env: dict) -> None:
    for eqn in jaxpr.eqns:
        ins = [_read(env, v) for v in eqn.invars]
        name = eqn.primitive.name
        sub = _sub_jaxpr(eqn) if name in CALLS else None
        if sub is not None:
            inner, consts = sub
            inner_env: dict = {}
            for v, c in zip(inner.constvars, consts, strict=True):
                inner_env[v] = Lit(c)
            if len(inner.invars) != len(ins):  # e.g. custom_vjp's residual conventions
                raise ValueError(f"cannot inline {name}: {len(inner.invars)} inputs, "
                                 f"{len(ins)} given")
            for v, x in zip(inner.invars, ins, strict=True):
                inner_env[v] = x
            _walk(flat, inner, inner_env)
            for v, iv in zip(eqn.outvars, inner.outvars, strict=True):
                env[v] = _read(inner_env, iv)
            continue
        outs = []
        for v in eqn.outvars:
            vid = flat.new(v.aval)
            outs.append(vid)
            if not isinstance(v, DropVar):
                env[v] = vid
        flat.eqns.append(Eqn(len(flat.eqns), name, dict(eqn.params), ins, outs,
                             summarize(eqn.source_info)))
