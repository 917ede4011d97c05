"""A model made of its channel graph alone: what a family or portfolio loaded from disk runs on.

The graph holds the program (the ops in execution order), every norm's epsilon and momentum and
every array's full shape, so :func:`subnets.graph.run` executes it without the model's code.
Widths come from the arrays, so full, masked and sliced variables all run.

Example:
    >>> import jax, numpy as np, subnets
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> v = net.init(jax.random.key(0))
    >>> model = subnets.models.from_graph(net.graph)
    >>> x = np.ones((2, 8), np.float32)
    >>> bool(np.allclose(model.apply(v, x), net.apply(v, x), atol=1e-5))
    True

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 5: the deployed family is data, not code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from subnets.graph import ChannelGraph


def run_graph(graph: ChannelGraph, variables: Mapping, x: jax.Array, *, train: bool = False,
              mutable: bool = False) -> Any:
    """``subnets.graph.run`` with the :class:`~subnets.models.Model` ``apply`` conventions."""
    from subnets.graph import run

    if not train:
        logits = run(graph, variables, x)
        return (logits, variables.get("batch_stats", {})) if mutable else logits
    logits, stats = run(graph, variables, x, train=True)
    return (logits, stats) if mutable else logits


class GraphModel:
    """A :class:`~subnets.models.Model` whose ``apply`` interprets ``graph.program``.

    Args:
        graph: a traced channel graph (with its program and shapes).
        name: an optional label (kept in reports, never interpreted).

    ``init`` returns zeros of the graph's full shapes: a graph stores no initialiser, and the
    zeros serve shape queries (costs, export); train from variables you have.
    """

    def __init__(self, graph: ChannelGraph, *, name: str | None = None) -> None:
        if not isinstance(graph, ChannelGraph):
            raise TypeError(f"from_graph needs a ChannelGraph, got {type(graph).__name__}")
        if not graph.program:
            raise ValueError("from_graph: the graph has no program (a hand-declared graph "
                             "without ops cannot run); trace it with subnets.graph.trace")
        self.graph = graph
        self.input_shape = tuple(int(s) for s in graph.input_shape)
        if name is not None:
            self.name = str(name)

    def init(self, key: jax.Array) -> dict:
        """Zeros of every array's full shape (see the class docstring)."""
        del key
        out: dict = {}
        for path, shape in self.graph.shapes:
            node = out
            for k in path[:-1]:
                node = node.setdefault(k, {})
            node[path[-1]] = jnp.zeros(shape, jnp.float32)
        return out

    def apply(self, variables: Mapping, x: jax.Array, *, train: bool = False,
              mutable: bool = False) -> Any:
        """Logits of ``x`` through :func:`subnets.graph.run` (widths from the arrays)."""
        return run_graph(self.graph, variables, x, train=train, mutable=mutable)

    def __repr__(self) -> str:
        label = getattr(self, "name", None)
        return f"GraphModel({label!r}, input_shape={self.input_shape})"


def from_graph(graph: ChannelGraph, *, name: str | None = None) -> GraphModel:
    """A model that runs ``graph`` with no model code (see :class:`GraphModel`)."""
    return GraphModel(graph, name=name)
