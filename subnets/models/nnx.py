"""Flax NNX modules as :class:`~subnets.models.Model`: ``from_nnx(model, example_x)``.

State is split once with ``nnx.split`` into the module's structure (the graphdef) and two plain
dicts through ``nnx.to_pure_dict``: ``variables["params"]`` (every ``nnx.Param``) and
``variables["batch_stats"]`` (every ``nnx.BatchStat``, e.g. BatchNorm's ``mean`` / ``var``) —
the same two collections a Linen model has, so the rest of the package sees one layout. Integer
keys (layers in a Python list) become strings and are converted back on merge. Other state
(``nnx.RngState``...) stays inside the adapter.

``apply`` puts the given arrays back with ``nnx.replace_by_pure_dict`` and ``nnx.merge`` and calls
the module: NNX layers compute with their arrays' shapes, so width-sliced arrays run through the
module's own code. The exception is a grouped (e.g. depthwise) convolution, whose group count is
a layer attribute rather than an array shape: a model with one runs sliced variables through
the graph's program (:func:`subnets.graph.run`) instead. ``train=True`` runs the module in
``train()`` mode (batch statistics); ``mutable=True`` returns ``(logits, new_batch_stats)`` as with
a Linen model's ``mutable=["batch_stats"]``.

Example:
    >>> import jax, numpy as np, subnets
    >>> from flax import nnx
    >>> class Net(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.l1 = nnx.Linear(6, 16, rngs=rngs)
    ...         self.bn = nnx.BatchNorm(16, rngs=rngs)
    ...         self.l2 = nnx.Linear(16, 3, rngs=rngs)
    ...     def __call__(self, x):
    ...         return self.l2(nnx.relu(self.bn(self.l1(x))))
    >>> model = subnets.models.from_nnx(Net(nnx.Rngs(0)), np.zeros((1, 6), np.float32))
    >>> v = model.init(jax.random.key(0))
    >>> sorted(v), sorted(v["batch_stats"]["bn"])
    (['batch_stats', 'params'], ['mean', 'var'])
    >>> logits, stats = model.apply(v, np.ones((4, 6), np.float32), train=True, mutable=True)
    >>> logits.shape, stats["bn"]["mean"].shape
    ((4, 3), (16,))

References:
    Flax NNX, "The Functional API" (``nnx.split`` / ``nnx.merge``) and ``nnx.to_pure_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from subnets.models._common import as_plain, example_batch, is_full, trace_graph
from subnets.models.graph_model import run_graph

COLLECTIONS = (("params", nnx.Param), ("batch_stats", nnx.BatchStat))


def _pure(state: Any) -> dict:
    return as_plain(nnx.to_pure_dict(state))


def _graphdef(model: nnx.Module, train: bool) -> Any:
    gd, state = nnx.split(model)
    copy = nnx.merge(gd, state)
    copy.train() if train else copy.eval()
    return nnx.graphdef(copy)


class NNXModel:
    """An NNX module with its traced channel graph (see :func:`from_nnx`).

    Attributes:
        graph: its channel graph.
        input_shape: one example's shape.
    """

    def __init__(self, model: nnx.Module, example_x: Any, *,
                 names: Mapping[str, str] | None = None, fixed: tuple[str, ...] = (),
                 name: str | None = None) -> None:
        if not isinstance(model, nnx.Module):
            raise TypeError(f"from_nnx needs a flax.nnx.Module, got {type(model).__name__}")
        x, self.input_shape = example_batch(example_x)
        if name is not None:
            self.name = str(name)
        self._defs = {False: _graphdef(model, False), True: _graphdef(model, True)}
        _, params, stats, self._rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        self._templates = {"params": params, "batch_stats": stats}
        self._initial = {"params": _pure(params), "batch_stats": _pure(stats)}
        if not self._initial["batch_stats"]:
            del self._initial["batch_stats"]
        self.graph = trace_graph(self._eval, self._initial, x, names=names, fixed=fixed,
                                 train_apply_fn=self._train)
        self._grouped = any(getattr(lay, "feature_groups", 1) > 1 or lay.kind == "depthwise"
                            for lay in self.graph.layers)

    def init(self, key: jax.Array) -> dict:
        """The wrapped module's own variables (NNX initialises at construction; ``key`` unused).

        Re-create the NNX module with other ``nnx.Rngs`` for other initial weights.
        """
        del key
        return jax.tree.map(lambda a: a, self._initial)

    def _merge(self, variables: Mapping, train: bool) -> nnx.Module:
        states = []
        for coll, _ in COLLECTIONS:
            template = jax.tree.map(lambda a: a, self._templates[coll])
            if coll in variables:
                # jnp arrays: NNX updates statistics with `var[...] = new`, which would write
                # into a caller's NumPy array in place.
                nnx.replace_by_pure_dict(template, jax.tree.map(jnp.asarray,
                                                                dict(variables[coll])))
            elif coll == "params":
                raise ValueError("NNX model variables need a 'params' collection")
            states.append(template)
        return nnx.merge(self._defs[train], *states, self._rest)

    def _eval(self, variables: Mapping, x: jax.Array) -> jax.Array:
        return self._merge(variables, False)(x)

    def _train(self, variables: Mapping, x: jax.Array) -> tuple[jax.Array, dict]:
        module = self._merge(variables, True)
        logits = module(x)
        return logits, _pure(nnx.state(module, nnx.BatchStat))

    def apply(self, variables: Mapping, x: jax.Array, *, train: bool = False,
              mutable: bool = False) -> Any:
        """Logits of ``x`` (see the module docstring for sliced variables and ``train``)."""
        variables = dict(variables)
        if self._grouped and not is_full(self.graph, variables):
            return run_graph(self.graph, variables, x, train=train, mutable=mutable)
        if train:
            logits, stats = self._train(variables, x)
            return (logits, stats) if mutable else logits
        logits = self._merge(variables, False)(x)
        return (logits, variables.get("batch_stats", {})) if mutable else logits

    def __repr__(self) -> str:
        return f"NNXModel({getattr(self, 'name', None)!r}, input_shape={self.input_shape})"


def from_nnx(model: nnx.Module, example_x: Any, *, names: Mapping[str, str] | None = None,
             fixed: tuple[str, ...] = (), name: str | None = None) -> NNXModel:
    """Adapt a Flax NNX module to the :class:`~subnets.models.Model` protocol.

    Args:
        model: the module; ``model(x)`` must give the logits (``eval()`` mode is used for the
            trace and for ``apply(train=False)``, ``train()`` mode for ``train=True``).
        example_x: an example batch ``(N,) + input_shape``.
        names: rename traced groups, ``{default_name: name}``.
        fixed: group names whose width must never change.
        name: an optional label for reports.

    Returns:
        An :class:`NNXModel`; ``init(key)`` returns the module's own weights as plain dicts.

    Raises:
        subnets.graph.TraceError: the module uses an op the tracer does not support.
    """
    return NNXModel(model, example_x, names=names, fixed=fixed, name=name)
