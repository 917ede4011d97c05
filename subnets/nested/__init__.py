"""REDS nested subnetworks: width selection, joint fine-tuning, the end-to-end pipeline.

Example:
    >>> import jax, subnets
    >>> from subnets import nested
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> v = net.init(jax.random.key(0))
    >>> fam = nested.build_family(net, v, subnets.importance.l1(net.graph, v), [0.25, 0.5])
    >>> [round(subnets.cost.macs(net, w) / subnets.cost.macs(net), 2) <= b
    ...  for w, b in zip(fam.levels, [0.25, 0.5, 1.0])]
    [True, True, True]

References:
    Corti et al., REDS (arXiv:2311.13349).
"""

from subnets.nested.finetune import (
    JointState,
    JointTrainer,
    default_optimizer,
    finetune,
    level_weights,
    make_joint_step,
)
from subnets.nested.pipeline import NestConfig, build_family
from subnets.nested.select import ChainProblem, chain_problem, select_widths
from subnets.nested.tables import GraphProblem, graph_problem

__all__ = [
    "ChainProblem",
    "GraphProblem",
    "JointState",
    "JointTrainer",
    "NestConfig",
    "build_family",
    "chain_problem",
    "default_optimizer",
    "finetune",
    "graph_problem",
    "level_weights",
    "make_joint_step",
    "select_widths",
]
