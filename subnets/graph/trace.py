"""Derive a :class:`~subnets.graph.ChannelGraph` from a model's own ``apply``.

``trace`` makes the jaxpr of ``apply_fn(variables, x)`` (eval mode) and runs a union-find over
(value, axis): a contraction (``dot_general``, ``conv_general_dilated``) joins its kernel's input
axis to the input's channel axis and starts a new group at its output axis (a depthwise conv
keeps its input's group); broadcasting elementwise ops and residual adds merge aligned axes; a
reshape that merges ``(spatial..., C)`` makes members with ``spatial=``. Around that it
recognises norms (:mod:`subnets.graph._norms`), biases, activations, pooling and flattening, and
records the program, which :func:`subnets.graph.run` executes. At the end ``run`` must reproduce
``apply_fn`` or the trace fails, so a mis-recognised pattern never passes silently.

Example:
    >>> import flax.linen as nn, jax, numpy as np
    >>> class MLP(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(16, name="a")(x))
    ...         return nn.Dense(3, name="b")(h + nn.Dense(16, name="skip")(x))
    >>> x = np.zeros((2, 5), np.float32)
    >>> v = MLP().init(jax.random.key(0), x)
    >>> g = trace(MLP().apply, v, x)
    >>> [(grp.name, grp.size) for grp in g.groups]
    [('in', 5), ('a', 16), ('out', 3)]
    >>> [op.kind for op in g.program]
    ['layer', 'act', 'layer', 'add', 'layer', 'output']

References:
    Fang et al., DepGraph / Torch-Pruning (CVPR 2023); the JAX jaxpr language
    (https://docs.jax.dev/en/latest/jaxpr.html).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from subnets.graph import _rules
from subnets.graph._assemble import assemble
from subnets.graph._flat import Eqn, Flat, Lit, flatten
from subnets.graph._norms import NormMatch, find_norms
from subnets.graph._rules import ALIASES, HINT, TraceError
from subnets.graph._uf import UnionFind, reshape_blocks
from subnets.graph.types import ChannelGraph, Path, leaf_paths


def _unflatten(paths: list[Path], leaves: Iterable[Any]) -> dict:
    out: dict = {}
    for path, leaf in zip(paths, leaves, strict=True):
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = leaf
    return out


def trace(apply_fn: Callable, variables: Mapping, example_input: Any, *,
          names: Mapping[str, str] | None = None, fixed: Iterable[str] = (),
          train_apply_fn: Callable | None = None, verify: bool = True) -> ChannelGraph:
    """The channel graph of ``apply_fn(variables, x)``, derived from its jaxpr.

    Args:
        apply_fn: ``apply_fn(variables, x) -> logits`` in eval mode (e.g. a Linen module's
            ``apply``).
        variables: the variables tree (nested dicts of arrays; every collection).
        example_input: a batch of inputs (its values do not matter, its shape does).
        names: ``{default_group_name: wanted_name}`` to rename groups (defaults: ``"in"``, the
            producing layer's module path, ``"out"``).
        fixed: names of further groups whose width must never change.
        train_apply_fn: optional ``train_apply_fn(variables, x) -> (logits, new_batch_stats)``;
            when given, each running-statistics norm's momentum is read from its update
            (otherwise ``Norm.momentum`` stays ``None``: eval mode holds no momentum).
        verify: check that :func:`subnets.graph.run` reproduces ``apply_fn`` (default).

    Returns:
        The graph, with its program, norms and every array's shape.

    Raises:
        TraceError: naming the unsupported primitive and its source line, or saying that the
            recorded program disagrees with ``apply_fn``.
    """
    items = list(leaf_paths(variables))
    if not items:
        raise ValueError("trace: variables hold no arrays")
    paths = [p for p, _ in items]
    leaves = [jnp.asarray(a) for _, a in items]
    x = jnp.asarray(example_input)
    if x.ndim < 1:
        raise ValueError(f"trace: example_input needs a batch axis, got shape {x.shape}")
    closed = jax.make_jaxpr(lambda ls, xx: apply_fn(_unflatten(paths, ls), xx))(leaves, x)
    flat = flatten(closed)
    tracer = _Tracer(flat, paths)
    tracer.walk()
    momenta = _momenta(train_apply_fn, paths, leaves, x) if train_apply_fn else {}
    graph = assemble(tracer, names=dict(names or {}), fixed=tuple(fixed), momenta=momenta,
                     input_shape=tuple(x.shape[1:]))
    if verify:
        _verify(graph, closed, paths, leaves, x)
    return graph


def _verify(graph: ChannelGraph, closed: Any, paths: list[Path], leaves: list,
            x: jax.Array) -> None:
    """``run(graph)`` must equal the jaxpr of ``apply_fn`` on the example (one compilation)."""
    from subnets.graph.program import run

    def both(ls, xx):
        want = jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *ls, xx)[0]
        return want, run(graph, _unflatten(paths, ls), xx)

    # Random inputs and perturbed variables (running variances kept positive): a freshly
    # initialised model (zero biases, unit statistics) would hide a swapped role.
    rng = np.random.default_rng(0)
    variances = {n.var for n in graph.norms if n.var is not None}
    noisy = []
    for p, a in zip(paths, leaves, strict=True):
        a = np.asarray(a)
        if not np.issubdtype(a.dtype, np.floating):
            noisy.append(a)
        elif p in variances:
            noisy.append((0.5 + rng.random(a.shape)).astype(a.dtype))
        else:
            noisy.append((a + 0.1 * rng.standard_normal(a.shape)).astype(a.dtype))
    leaves = noisy
    if np.issubdtype(x.dtype, np.floating):
        x = rng.standard_normal(x.shape).astype(x.dtype)
    lowered = jax.jit(both).lower(leaves, x)
    try:  # the check needs no fast code: skip LLVM's optimisations (a third of compile time)
        compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
    except Exception:  # noqa: BLE001 - an option another backend may not know
        compiled = lowered.compile()
    want, got = (np.asarray(a) for a in compiled(leaves, x))
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not err <= 1e-4 * scale:
        raise TraceError(
            f"the traced program does not reproduce apply_fn (max abs difference {err:.3g} at "
            f"scale {scale:.3g}, shapes {got.shape} vs {want.shape}): the model uses a pattern "
            f"the tracer mis-recognised; {HINT}")


def _momenta(train_apply_fn: Callable, paths: list[Path], leaves: list, x: jax.Array) -> dict:
    """``{stat_path: momentum}`` read from ``new = m * old + (1 - m) * batch`` in train mode."""
    closed = jax.make_jaxpr(
        lambda ls, xx: train_apply_fn(_unflatten(paths, ls), xx))(leaves, x)
    flat = flatten(closed)
    out_tree = jax.eval_shape(lambda ls, xx: train_apply_fn(_unflatten(paths, ls), xx),
                              leaves, x)
    if not (isinstance(out_tree, tuple) and len(out_tree) == 2):
        raise ValueError("train_apply_fn must return (logits, new_batch_stats)")
    stat_items = list(leaf_paths(out_tree[1])) if isinstance(out_tree[1], Mapping) else []
    n_logits = len(jax.tree.leaves(out_tree[0]))
    leaf_of = {v: i for i, v in enumerate(flat.invars[: len(paths)])}
    out = {}
    for (spath, _), ov in zip(stat_items, flat.outvars[n_logits:], strict=False):
        e = flat.eqns[flat.producer[ov]] if isinstance(ov, int) and ov in flat.producer else None
        if e is None or e.prim != "add":
            continue
        for v in e.vars():
            p = flat.eqns[flat.producer[v]] if v in flat.producer else None
            if p is None or p.prim != "mul":
                continue
            lits = [a.scalar() for a in p.ins if isinstance(a, Lit)]
            olds = [leaf_of.get(a) for a in p.ins if isinstance(a, int)]
            if lits and olds and olds[0] is not None and paths[olds[0]][-len(spath):] == spath:
                out[paths[olds[0]]] = float(lits[0])
    return out


class _Tracer:
    """One pass over the flattened jaxpr: axes into the union-find, ops into the program."""

    def __init__(self, flat: Flat, paths: list[Path]) -> None:
        self.flat, self.paths = flat, paths
        self.n_leaves = len(paths)
        self.leaf_vars = flat.invars[: self.n_leaves]
        if len(flat.invars) != self.n_leaves + 1:
            raise TraceError("trace: apply_fn must take (variables, x) with one array x")
        self.x = flat.invars[self.n_leaves]
        self.uf = UnionFind()
        self.act: set[int] = {self.x}
        self.origin: dict[int, tuple[int, tuple]] = {}
        self.pv: dict[int, int] = {self.x: 0}       # flat id -> program value
        self.vaxis: dict[int, int | None] = {0: None}   # program value -> channel axis
        self.vflat: dict[int, int] = {0: self.x}        # program value -> flat id
        self.pre: dict[int, bool] = {0: True}           # no layer upstream
        self.ops: list[dict] = []
        self.layers: list[_rules.LayerRec] = []
        self.layer_by_out: dict[int, _rules.LayerRec] = {}
        self.norms: list[tuple[NormMatch, int]] = []
        self.done: set[int] = set()
        self._prepass()
        self.matches = find_norms(flat, self.act, self.origin)
        self.absorbed = set().union(*(m.eqns for m in self.matches)) if self.matches else set()
        self.split_ok = set().union(*(m.split for m in self.matches)) if self.matches else set()
        self.norm_last = {m.last: m for m in self.matches}

    # ------------------------------------------------------------------ helpers
    def err(self, e: Eqn, why: str) -> TraceError:
        return TraceError(f"cannot trace primitive {e.prim!r} at {e.src}: {why}; {HINT}")

    def shape(self, v: int) -> tuple[int, ...]:
        return self.flat.shapes[v]

    def node(self, v: int, axis: int) -> int:
        return self.uf.node(v, axis, self.shape(v)[axis])

    def join(self, a: int, ai: int, b: int, bi: int) -> None:
        self.uf.union(self.node(a, ai), self.node(b, bi))

    def is_act(self, v: Any) -> bool:
        return isinstance(v, int) and v in self.act

    def leaf(self, v: Any) -> int | None:
        o = self.origin.get(v) if isinstance(v, int) else None
        return None if o is None else o[0]

    def channel_axis_of(self, v: int) -> int | None:
        hits = [i for i in range(len(self.shape(v))) if self.uf.has(self.node(v, i), "channel")]
        return hits[-1] if hits else None

    # ------------------------------------------------------------------ pre-pass
    def _prepass(self) -> None:
        for i, v in enumerate(self.leaf_vars):
            self.origin[v] = (i, tuple(range(len(self.shape(v)))))
        for e in self.flat.eqns:
            if any(v in self.act for v in e.vars()):
                self.act.update(e.outs)
                continue
            vs = e.vars()
            if len(vs) != 1 or vs[0] not in self.origin or len(e.outs) != 1:
                continue
            leaf, axmap = self.origin[vs[0]]
            src, dst = self.shape(vs[0]), self.shape(e.outs[0])
            if e.prim in ALIASES:
                self.origin[e.outs[0]] = (leaf, axmap)
            elif e.prim == "broadcast_in_dim":
                new = [None] * len(dst)
                for i, d in enumerate(e.params["broadcast_dimensions"]):
                    new[d] = axmap[i] if src[i] == dst[d] else None
                if all(n is not None or dst[d] == 1 for d, n in enumerate(new)):
                    self.origin[e.outs[0]] = (leaf, tuple(new))
            elif e.prim == "reshape":
                new = [None] * len(dst)
                try:
                    blocks = reshape_blocks(src, dst)
                except ValueError:
                    continue
                if all(len(i) <= 1 and len(o) <= 1 for i, o in blocks):
                    for i, o in blocks:
                        if i and o:
                            new[o[0]] = axmap[i[0]]
                    self.origin[e.outs[0]] = (leaf, tuple(new))

    # ------------------------------------------------------------------ main walk
    def walk(self) -> None:
        for e in self.flat.eqns:
            self._axes(e)
            if e.index in self.done:
                continue
            if e.index in self.absorbed:
                if e.index in self.norm_last:
                    self._norm(self.norm_last[e.index])
                continue
            if any(self.is_act(v) for v in e.ins):
                self._op(e)
        outs = self.flat.outvars
        if len(outs) != 1 or not self.is_act(outs[0]):
            raise TraceError("trace: apply_fn must return one array computed from x "
                             f"(got {len(outs)} outputs)")
        v = self.pv.get(outs[0])
        if v is None:
            raise TraceError("trace: the output is not reached by a recognised op")
        self.emit("output", (v,), None, out_flat=None)

    def emit(self, kind: str, inputs: tuple[int, ...], axis: int | None, *, out_flat: int | None,
             ref: Any = None, attrs: dict | None = None) -> int:
        if out_flat is None:
            value = inputs[0]
        else:
            value = len(self.vaxis)
            self.pv[out_flat] = value
            self.vaxis[value] = axis
            self.vflat[value] = out_flat
            self.pre[value] = kind != "layer" and all(self.pre[i] for i in inputs)
        self.ops.append({"kind": kind, "inputs": inputs, "output": value, "ref": ref,
                         "attrs": dict(attrs or {})})
        return value

    def alias(self, src: int, dst: int) -> None:
        self.pv[dst] = self.pv[src]

    def value(self, e: Eqn, v: int) -> int:
        if v not in self.pv:
            raise self.err(e, "its input comes from an operation the tracer did not recognise")
        return self.pv[v]

    _axes = _rules.axes
    _op = _rules.op
    _norm = _rules.norm
