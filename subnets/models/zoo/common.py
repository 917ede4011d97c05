"""What every zoo model shares: the functional ``Net`` wrapper, norm layers, graph helpers.

A zoo model is a Flax Linen module whose channel counts are constructor arguments. ``Net.apply``
reads the widths off the variables' shapes (through the channel graph) and builds the module at
those widths, so full, sliced and permuted variables all run through the same ``apply``.

Example: the same ``apply`` runs the full and a width-sliced variables tree.
    >>> import jax, numpy as np, subnets
    >>> net = subnets.zoo.create("cnn-s", num_classes=12)
    >>> v = net.init(jax.random.key(0))
    >>> half = subnets.transforms.slice_widths(net.graph, v, {"c0": 14})
    >>> x = np.zeros((1, *net.input_shape), np.float32)
    >>> net.apply(v, x).shape == net.apply(half, x).shape == (1, 12)
    True

References:
    Flax Linen, "Module" and "Variables" (the ``params`` / ``batch_stats`` collections).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from subnets.graph import ChannelGraph

NORMS = ("batch", "group", "instance", "none")


@dataclass(frozen=True)
class Net:
    """A zoo network exposed functionally.

    Attributes:
        name: zoo name, e.g. ``"ds-cnn-s"``.
        graph: the channel graph of its variables.
        input_shape: one example's shape (no batch axis).
        num_classes: classifier outputs.
        norm: the norm kind in use.
        module: ``module(widths: dict, **options) -> flax.linen.Module`` at those widths.
        depthwise: ``"shifts"`` (fast on CPU, the default) or ``"conv"`` (one grouped conv,
            what TFLite needs: export with ``dataclasses.replace(net, depthwise="conv")``).
            Both compute the same function on the same variables.
    """

    name: str
    graph: ChannelGraph = field(compare=False)  # a LazyGraph until first read
    input_shape: tuple[int, ...]
    num_classes: int
    norm: str
    module: Callable[..., nn.Module]
    depthwise: str = "shifts"

    def __getattribute__(self, attr: str) -> Any:
        value = object.__getattribute__(self, attr)
        if attr == "graph" and isinstance(value, LazyGraph):
            value = value()
            object.__setattr__(self, "graph", value)
        return value

    def build(self, widths: Mapping[str, int]) -> nn.Module:
        """The Flax module at ``widths``."""
        return self.module(widths, depthwise=self.depthwise)

    def init(self, key: jax.Array) -> dict:
        """Fresh variables (``params`` and, with BatchNorm, ``batch_stats``)."""
        return dict(_jit_init(self)(key))

    def apply(self, variables: Mapping, x: jax.Array, *, train: bool = False,
              mutable: bool = False) -> Any:
        """Logits for a batch ``x``; widths are inferred from the variables' shapes.

        Args:
            variables: full, permuted, masked or width-sliced variables.
            x: a batch of inputs, shape ``(N,) + input_shape``.
            train: batch statistics instead of running averages in BatchNorm.
            mutable: also return the updated ``batch_stats`` as ``(logits, new_batch_stats)``
                (only meaningful with ``train=True`` and BatchNorm).
        """
        module = self.build(self.graph.widths_of(variables))
        has_stats = "batch_stats" in variables
        if train and has_stats:
            logits, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
            return (logits, updates["batch_stats"]) if mutable else logits
        logits = module.apply(variables, x, train=train)
        if mutable:
            return logits, variables.get("batch_stats", {})
        return logits

    def __repr__(self) -> str:
        return (f"Net({self.name!r}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, norm={self.norm!r})")


@functools.lru_cache(maxsize=32)
def _jit_init(net: Net) -> Callable:
    """One compiled initialiser per net: eager Flax init of a ResNet takes tens of seconds."""
    module = net.build(net.graph.sizes)
    shape = (1,) + tuple(net.input_shape)
    # The dummy input is made inside the jitted function: built outside, it would be a tracer
    # whenever the first call happens under an outer jit, and the cache would leak it.
    return jax.jit(lambda key: module.init(key, jnp.zeros(shape, jnp.float32), train=False))


def group_count(channels: int, cap: int = 32) -> int:
    """GroupNorm groups: the largest divisor of ``channels`` not above ``cap``.

    LCS uses 32 groups capped at the channel count; a sliced width need not be divisible by
    32, so we take the nearest divisor below instead of failing.
    """
    for g in range(min(cap, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


NORM_EPS = 1e-5  # every zoo norm layer's epsilon; exporters that fold norms read it here


def norm_layer(kind: str, name: str, channels: int, train: bool) -> Callable:
    """The norm after a layer with ``channels`` outputs."""
    if kind == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=NORM_EPS,
                            name=name)
    if kind == "group":
        return nn.GroupNorm(num_groups=group_count(channels), epsilon=NORM_EPS, name=name)
    if kind == "instance":
        return nn.GroupNorm(num_groups=None, group_size=1, epsilon=NORM_EPS, name=name)
    return lambda h: h


def conv_out_size(size: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "SAME":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def width_items(widths: Mapping[str, int]) -> tuple:
    """Widths as a sorted tuple of pairs: a hashable Flax module attribute."""
    return tuple(sorted(dict(widths).items()))


# Traced zoo graphs, one per (model, config, classes, input shape, norm) in this process.
_GRAPHS: dict[tuple, ChannelGraph] = {}


@dataclass(frozen=True)
class LazyGraph:
    """A zoo graph not traced yet: :class:`Net` traces it the first time ``net.graph`` is read."""

    key: tuple
    module: nn.Module
    input_shape: tuple[int, ...]
    producers: tuple

    def __call__(self) -> ChannelGraph:
        return traced_graph(self.key, self.module, self.input_shape, dict(self.producers))


def lazy_graph(key: tuple, module: nn.Module, input_shape: tuple[int, ...],
               producers: Mapping[str, str]) -> ChannelGraph | LazyGraph:
    """The cached graph if this configuration was traced before, else a :class:`LazyGraph`."""
    graph = _GRAPHS.get(key)
    if graph is not None:
        return graph
    return LazyGraph(key, module, tuple(input_shape), tuple(sorted(producers.items())))


def traced_graph(key: tuple, module: nn.Module, input_shape: tuple[int, ...],
                 producers: Mapping[str, str]) -> ChannelGraph:
    """The channel graph of ``module`` traced from its own ``apply``, cached per ``key``.

    ``producers`` names each group after the first layer that writes it: ``{module name:
    group}`` (e.g. ``{"dense0": "h0"}``; the tracer's default name is that module's name), which
    keeps the zoo's historic group names. ``key`` identifies (model, classes, input shape, norm), so
    ``zoo.create`` traces each configuration once per process.
    """
    graph = _GRAPHS.get(key)
    if graph is None:
        from subnets.graph import TraceError, trace

        shape = (2,) + tuple(input_shape)
        # The trace needs the arrays' shapes, not their values: zeros of eval_shape cost
        # milliseconds where compiling the initialiser costs seconds. The zoo's graphs are
        # verified against the modules by the tests (traced == the old declarations kept in
        # tests/data/zoo_graphs.json, slice == mask), so
        # the per-call run() check is skipped here.
        shapes = jax.eval_shape(lambda k: module.init(k, jnp.zeros(shape, jnp.float32),
                                                      train=False), jax.random.key(0))
        # NumPy zeros: jnp.zeros would dispatch (and compile) one broadcast per shape.
        variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
        x = np.zeros(shape, np.float32)
        apply = functools.partial(_eval_apply, module)
        train = functools.partial(_train_apply, module) if "batch_stats" in variables else None
        try:  # ``producers`` names each group's first producer: the tracer's default names
            graph = trace(apply, variables, x, names=dict(producers), train_apply_fn=train,
                          verify=False)
        except TraceError:
            raise
        except ValueError:  # a default the table did not foresee: name by any producer
            first = trace(apply, variables, x, verify=False)
            names = {grp.name: producers[lay.path[1]] for grp in first.groups
                     for lay in first.producers(grp.name) if lay.path[1] in producers}
            graph = trace(apply, variables, x, names={k: v for k, v in names.items() if k != v},
                          train_apply_fn=train, verify=False)
        _GRAPHS[key] = graph
    return graph


def _eval_apply(module: nn.Module, variables: Mapping, x: jax.Array) -> jax.Array:
    return module.apply(variables, x, train=False)


def _train_apply(module: nn.Module, variables: Mapping, x: jax.Array) -> tuple:
    logits, upd = module.apply(variables, x, train=True, mutable=["batch_stats"])
    return logits, upd["batch_stats"]
