"""The one model protocol every algorithm of the package reads.

A model is a channel graph plus two pure functions. ``apply`` reads the widths off the
variables' shapes, so full, permuted, masked and width-sliced variables all run through the same
call; ``train=True`` uses batch statistics, and ``mutable=True`` also returns the updated
``batch_stats`` as ``(logits, new_batch_stats)`` (as Flax Linen's ``mutable=["batch_stats"]``).

Variables are a plain nested dict with (at most) two collections: ``params`` (trainable) and
``batch_stats`` (running statistics), whatever framework the model is written in.

Example:
    >>> import subnets
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> isinstance(net, subnets.models.Model), describe(net)["num_classes"]
    (True, 3)

References:
    PEP 544 (structural subtyping); Flax Linen "Variables" (the ``params`` / ``batch_stats``
    collections).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import jax

from subnets.graph import ChannelGraph


@runtime_checkable
class Model(Protocol):
    """What every algorithm needs of a network.

    Attributes:
        graph: the channel graph of its variables (structure, program, every array's shape).
        input_shape: one example's shape, without the batch axis.
    """

    graph: ChannelGraph
    input_shape: tuple[int, ...]

    def init(self, key: jax.Array) -> dict:
        """Fresh full-size variables: ``{"params": ..., "batch_stats": ...}``."""
        ...

    def apply(self, variables: Mapping, x: jax.Array, *, train: bool = False,
              mutable: bool = False) -> Any:
        """Logits of the batch ``x``; widths come from the arrays' shapes."""
        ...


def num_classes(model: Any) -> int:
    """Classifier outputs: the size of the graph's fixed ``"out"`` group (the logits)."""
    graph = model if isinstance(model, ChannelGraph) else model.graph
    return int(graph["out"].size)


def describe(model: Any) -> dict:
    """JSON-ready identity of a model: a label, its input shape and class count.

    The label is the model's ``name`` if it has one (zoo models do), else its type's name;
    nothing here depends on which model it is.
    """
    return {"model": str(getattr(model, "name", type(model).__name__)),
            "input_shape": [int(s) for s in model.input_shape],
            "num_classes": num_classes(model)}


def check_model(model: Any, what: str = "model") -> None:
    """Raise TypeError saying which part of the protocol ``model`` lacks."""
    missing = [a for a in ("graph", "input_shape", "init", "apply") if not hasattr(model, a)]
    if missing:
        hint = ""
        if hasattr(model, "init") and hasattr(model, "apply") and "graph" in missing:
            hint = (" (a Flax module? wrap it: subnets.models.from_linen(module, example_x) or "
                    "subnets.models.from_nnx(model, example_x))")
        raise TypeError(f"{what}: {type(model).__name__} is not a subnets Model; it lacks "
                        f"{', '.join(missing)}{hint}")
