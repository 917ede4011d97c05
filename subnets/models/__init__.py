"""Models: one protocol for every network, adapters for Flax Linen and NNX, and the zoo.

Every algorithm of the package takes a :class:`Model`: something with a channel ``graph``
(traced from its own code by :func:`subnets.graph.trace`), an ``input_shape``, ``init(key)`` and
``apply(variables, x, *, train=False, mutable=False)`` that reads the widths off the arrays.
:func:`from_linen` and :func:`from_nnx` make one from a user's Flax model in one line;
:func:`from_graph` makes one from a graph alone (what a family loaded from disk runs on); the zoo
(:mod:`subnets.models.zoo`, also importable as :mod:`subnets.zoo`) holds the papers' models.

Example:
    >>> import jax, numpy as np, flax.linen as nn, subnets
    >>> class MLP(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         return nn.Dense(3)(nn.relu(nn.Dense(16)(x)))
    >>> model = subnets.models.from_linen(MLP(), np.zeros((1, 8), np.float32))
    >>> v = model.init(jax.random.key(0))
    >>> model.apply(v, np.zeros((2, 8), np.float32)).shape
    (2, 3)
    >>> isinstance(model, subnets.models.Model)
    True

References:
    Fang et al., DepGraph / Torch-Pruning (CVPR 2023): trace the user's model, not a model zoo.
"""

from subnets.models.graph_model import GraphModel, from_graph
from subnets.models.linen import LinenModel, from_linen
from subnets.models.nnx import NNXModel, from_nnx
from subnets.models.protocol import Model, describe

__all__ = ["GraphModel", "LinenModel", "Model", "NNXModel", "describe", "from_graph",
           "from_linen", "from_nnx"]
