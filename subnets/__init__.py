"""subnets: one trained network, a family of subnetworks that switch at run time.

The public API is declared here, once. Params are plain nested dicts of arrays; structure lives in
the channel graph (:mod:`subnets.graph`); everything else is pure functions over both.

Example:
    >>> import jax, subnets
    >>> net = subnets.zoo.create("ds-cnn-s", num_classes=12)
    >>> v = net.init(jax.random.key(0))
    >>> small = subnets.slice_widths(net.graph, v, {"g0": 32, "g1": 32})
    >>> subnets.cost.macs(net, {"g0": 32, "g1": 32}) < subnets.cost.macs(net)
    True

References:
    REDS (arXiv:2311.13349), LCS (arXiv:2110.04252), DNNShifter (Eccles et al. 2023),
    Reconvene (Eccles et al. 2024).
"""

from subnets import cpu  # isort: skip  (host-memory policy first, before JAX starts threads)
from subnets import cost, graph, transforms  # isort: skip  (foundation first)
from subnets import models, zoo  # isort: skip  (models before the algorithms)
from subnets import (
    checkpoint,
    data,
    export,
    importance,
    io,
    nested,
    ops,
    parallel,
    pruning,
    runtime,
    subspace,
    train,
)
from subnets.graph import ChannelGraph, Group, Layer, Member
from subnets.nested import build_family, select_widths
from subnets.pruning import remove_dead
from subnets.runtime import Family, Portfolio
from subnets.transforms import (
    fake_quant,
    interpolate,
    permute,
    slice_widths,
    topk_mask,
    topk_masks,
    width_mask,
)

__version__ = "0.1.0"

__all__ = [
    "ChannelGraph",
    "Family",
    "Portfolio",
    "build_family",
    "checkpoint",
    "data",
    "export",
    "importance",
    "io",
    "nested",
    "ops",
    "parallel",
    "pruning",
    "remove_dead",
    "runtime",
    "select_widths",
    "subspace",
    "train",
    "Group",
    "Layer",
    "Member",
    "cost",
    "cpu",
    "fake_quant",
    "graph",
    "interpolate",
    "models",
    "permute",
    "slice_widths",
    "topk_mask",
    "topk_masks",
    "transforms",
    "width_mask",
    "zoo",
]
