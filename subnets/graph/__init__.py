"""The channel graph: the one structural fact every structured algorithm reads.

:mod:`~subnets.graph.types` holds the data (members with roles, groups, layers, norms, the
program, array shapes); :func:`trace` derives a graph from a model's own ``apply``;
:func:`run` executes a graph's program on any (full, permuted, sliced) variables;
:func:`check` compares a hand-declared graph with the traced one.

Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> from subnets.graph import trace
    >>> v = {"params": {"d0": {"kernel": np.ones((4, 8), np.float32)},
    ...                 "d1": {"kernel": np.ones((8, 2), np.float32)}}}
    >>> def apply(v, x):
    ...     return jnp.maximum(x @ v["params"]["d0"]["kernel"], 0) @ v["params"]["d1"]["kernel"]
    >>> g = trace(apply, v, np.zeros((1, 4), np.float32))
    >>> [(x.name, x.size, x.fixed) for x in g.groups]
    [('in', 4, True), ('d0', 8, False), ('out', 2, True)]

References:
    Fang et al., DepGraph / Torch-Pruning (CVPR 2023): a dependency graph traced from the model.
"""

from subnets.graph.check import check
from subnets.graph.program import run
from subnets.graph.query import take, unview, view
from subnets.graph.trace import TraceError, trace
from subnets.graph.types import (
    LAYER_KINDS,
    OP_KINDS,
    ROLES,
    ChannelGraph,
    Group,
    Layer,
    Member,
    Norm,
    Op,
    Path,
    get_path,
    leaf_paths,
    set_paths,
)

__all__ = [
    "LAYER_KINDS", "OP_KINDS", "ROLES", "ChannelGraph", "Group", "Layer", "Member", "Norm", "Op",
    "Path", "TraceError", "check", "get_path", "leaf_paths", "run", "set_paths", "take", "trace",
    "unview", "view",
]
