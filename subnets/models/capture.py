"""The input each layer sees, for any model: read off the jaxpr of ``model.apply``.

:func:`layer_inputs` evaluates the jaxpr of ``apply`` equation by equation and records the left
operand of every ``dot_general`` / ``conv_general_dilated`` whose kernel operand is one of the
requested arrays (through dtype casts and nested ``jit`` / ``custom_jvp`` calls). No module
names, layer types or framework hooks are involved, so Linen, NNX and graph-only models are
captured alike; :func:`subnets.pruning.remove_dead` measures dead channels' constants with it.

Example:
    >>> import jax, numpy as np, subnets
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> v = net.init(jax.random.key(0))
    >>> x = np.ones((2, 8), np.float32)
    >>> seen, logits = layer_inputs(net, v, x, {("params", "dense1", "kernel")})
    >>> seen[("params", "dense1", "kernel")].shape, logits.shape
    ((2, 144), (2, 3))

References:
    JAX, "Writing custom Jaxpr interpreters in JAX" (the evaluation loop followed here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore

from subnets.graph import Path, leaf_paths, set_paths

_CONTRACTIONS = ("dot_general", "conv_general_dilated")
_PASS_THROUGH = ("convert_element_type", "copy", "copy_p")


def _sub_jaxpr(eqn: Any) -> Any:
    if eqn.primitive.name in ("jit", "pjit", "closed_call", "core_call", "remat",
                              "checkpoint", "custom_jvp_call", "custom_vjp_call",
                              "custom_vjp_call_jaxpr"):
        for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
            sub = eqn.params.get(key)
            if sub is not None and not callable(sub):
                return sub
    return None


def _eval(jaxpr: Any, consts: list, args: list, kernels: dict, seen: dict) -> list:
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = c
    for v, a in zip(jaxpr.invars, args, strict=True):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in _CONTRACTIONS and len(eqn.invars) >= 2:
            path = kernels.get(eqn.invars[1]) if not isinstance(eqn.invars[1],
                                                                  jcore.Literal) else None
            if path is not None and path not in seen:
                seen[path] = invals[0]
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            inner = sub.jaxpr if hasattr(sub, "jaxpr") else sub
            sub_consts = list(getattr(sub, "consts", ()))
            n_extra = len(invals) - len(inner.invars)
            sub_kernels = {sv: kernels[iv] for iv, sv in zip(eqn.invars[n_extra:], inner.invars,
                                                             strict=True)
                           if not isinstance(iv, jcore.Literal) and iv in kernels}
            outvals = _eval(inner, sub_consts, invals[n_extra:], sub_kernels, seen)
        else:
            outvals = eqn.primitive.bind(*invals, **eqn.params)
            if not eqn.primitive.multiple_results:
                outvals = [outvals]
        if name in _PASS_THROUGH and not isinstance(eqn.invars[0], jcore.Literal) \
                and eqn.invars[0] in kernels:
            kernels[eqn.outvars[0]] = kernels[eqn.invars[0]]
        for v, val in zip(eqn.outvars, outvals, strict=True):
            env[v] = val
    return [read(v) for v in jaxpr.outvars]


def layer_inputs(model: Any, variables: Mapping, x: Any,
                 paths: set[Path]) -> tuple[dict[Path, np.ndarray], np.ndarray]:
    """``({kernel path: its layer's input}, logits)`` of one eval-mode pass of ``model``.

    Args:
        model: any :class:`~subnets.models.Model`.
        variables: its variables.
        x: a batch.
        paths: kernel paths of the layers whose inputs are wanted.

    Raises:
        ValueError: a requested kernel is never contracted with an input (names the paths).
    """
    items = list(leaf_paths(variables))
    order = [p for p, _ in items]
    wanted = set(paths)

    def fn(leaves, xb):
        v = set_paths(variables, dict(zip(order, leaves, strict=True)))
        return model.apply(v, xb)

    def run(leaves, xb):
        closed = jax.make_jaxpr(fn)(leaves, xb)
        jaxpr = closed.jaxpr
        kernels = {var: p for var, p in zip(jaxpr.invars, order, strict=False) if p in wanted}
        seen: dict = {}
        (logits,) = _eval(jaxpr, list(closed.consts), [*leaves, xb], kernels, seen)
        return seen, logits

    seen, logits = jax.jit(run)([leaf for _, leaf in items], x)
    missing = wanted - set(seen)
    if missing:
        raise ValueError(f"layers {sorted('/'.join(p) for p in missing)} never multiply an "
                         "input by their kernel in the model's apply")
    return {p: np.asarray(a) for p, a in seen.items()}, np.asarray(logits)
