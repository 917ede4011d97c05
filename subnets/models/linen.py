"""Flax Linen modules as :class:`~subnets.models.Model`: ``from_linen(module, example_x)``.

The graph is traced from the module's own ``apply`` (:func:`subnets.graph.trace`). Flax Linen
refuses arrays of another shape than the module declares (``ScopeParamShapeError``: every param
is checked against the module's attributes), so ``apply`` runs ``module.apply`` when every array
has its full shape and the graph's program (:func:`subnets.graph.run`, the same function, traced
and checked equal) when the variables are width-sliced. Masked and permuted variables keep their
shapes and run through the module itself.

Example: a residual MLP, sliced without writing a width-parameterised module.
    >>> import jax, numpy as np, flax.linen as nn, subnets
    >>> class ResMLP(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(32, name="inp")(x))
    ...         h = h + nn.relu(nn.Dense(32, name="block")(h))
    ...         return nn.Dense(4, name="head")(h)
    >>> model = subnets.models.from_linen(ResMLP(), np.zeros((1, 10), np.float32))
    >>> v = model.init(jax.random.key(0))
    >>> len(model.graph.free)  # the residual add joins both hidden layers into one group
    1
    >>> g = model.graph.free[0].name
    >>> small = subnets.slice_widths(model.graph, v, {g: 8})
    >>> model.apply(small, np.ones((2, 10), np.float32)).shape
    (2, 4)

References:
    Flax Linen, ``Module.init`` / ``Module.apply`` and ``flax.core.scope`` (param shape checks).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from subnets.models._common import as_plain, example_batch, is_full, trace_graph, train_keyword
from subnets.models.graph_model import run_graph


class LinenModel:
    """A Linen module with its traced channel graph (see :func:`from_linen`).

    Attributes:
        module: the Flax module.
        graph: its channel graph.
        input_shape: one example's shape.
        train_arg: the keyword ``module.__call__`` takes for train mode, or None.
    """

    def __init__(self, module: nn.Module, example_x: Any, *, train_arg: Any = None,
                 names: Mapping[str, str] | None = None, fixed: tuple[str, ...] = (),
                 name: str | None = None, key: jax.Array | None = None) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"from_linen needs a flax.linen.Module, got {type(module).__name__}")
        x, self.input_shape = example_batch(example_x)
        self.module = module
        self.train_arg = train_keyword(type(module).__call__, train_arg)
        self._shape = (1,) + self.input_shape
        if name is not None:
            self.name = str(name)
        variables = self.init(jax.random.key(0) if key is None else key)
        self.graph = trace_graph(self._eval, variables, x, names=names, fixed=fixed,
                                 train_apply_fn=self._train if self.train_arg else None)

    def _kw(self, train: bool) -> dict:
        return {self.train_arg: train} if self.train_arg else {}

    def _eval(self, variables: Mapping, x: jax.Array) -> jax.Array:
        return self.module.apply(variables, x, **self._kw(False))

    def _train(self, variables: Mapping, x: jax.Array) -> tuple[jax.Array, dict]:
        logits, upd = self.module.apply(variables, x, mutable=["batch_stats"], **self._kw(True))
        return logits, upd["batch_stats"]

    def init(self, key: jax.Array) -> dict:
        """Fresh full-size variables (every collection the module creates)."""
        return as_plain(_init_fn(self)(key))

    def apply(self, variables: Mapping, x: jax.Array, *, train: bool = False,
              mutable: bool = False) -> Any:
        """Logits of ``x``; sliced variables run through the graph's program (see module doc).

        Args:
            variables: full, permuted, masked or width-sliced variables.
            x: a batch ``(N,) + input_shape``.
            train: batch statistics in BatchNorm (running averages are updated).
            mutable: also return the new ``batch_stats``: ``(logits, new_batch_stats)``.
        """
        variables = dict(variables)
        if not is_full(self.graph, variables):
            return run_graph(self.graph, variables, x, train=train, mutable=mutable)
        if train and "batch_stats" in variables:
            logits, upd = self.module.apply(variables, x, mutable=["batch_stats"],
                                            **self._kw(True))
            return (logits, as_plain(upd["batch_stats"])) if mutable else logits
        logits = self.module.apply(variables, x, **self._kw(train))
        return (logits, variables.get("batch_stats", {})) if mutable else logits

    def __repr__(self) -> str:
        label = getattr(self, "name", type(self.module).__name__)
        return f"LinenModel({label!r}, input_shape={self.input_shape})"


@functools.lru_cache(maxsize=32)
def _init_fn(model: LinenModel):
    shape, kw = model._shape, model._kw(False)
    # The dummy input is built inside the jitted function so no tracer leaks into the cache.
    return jax.jit(lambda key: model.module.init(key, jnp.zeros(shape, jnp.float32), **kw))


def from_linen(module: nn.Module, example_x: Any, *, train_arg: Any = None,
               names: Mapping[str, str] | None = None, fixed: tuple[str, ...] = (),
               name: str | None = None, key: jax.Array | None = None) -> LinenModel:
    """Adapt a Flax Linen module to the :class:`~subnets.models.Model` protocol.

    Args:
        module: the module; ``module.apply(variables, x)`` must give the logits.
        example_x: an example batch ``(N,) + input_shape`` (its values only feed the trace
            check).
        train_arg: the keyword of ``__call__`` that selects train mode (default: ``"train"``
            if ``__call__`` has it, else none); ``False``: none.
        names: rename traced groups, ``{default_name: name}`` (see :func:`subnets.graph.trace`).
        fixed: group names whose width must never change.
        name: an optional label for reports.
        key: the randomness of the variables the trace runs on (default ``key(0)``).

    Returns:
        A :class:`LinenModel`.

    Raises:
        subnets.graph.TraceError: the module uses an op the tracer does not support (named,
            with its source line).
    """
    return LinenModel(module, example_x, train_arg=train_arg, names=names, fixed=fixed,
                      name=name, key=key)
