"""LCS: learning compressible subspaces (point and line), three compression kinds, training in
one jitted vmapped step, deployment at any level without recalibration.

Example: a point subspace of cpreresnet20 deployed at a width never named in training.
    >>> import jax, numpy as np, subnets
    >>> from subnets import subspace
    >>> net = subnets.zoo.create("cpreresnet20", num_classes=10, input_shape=(8, 8, 1),
    ...                          norm="instance")
    >>> s = subspace.init_point(net, key=jax.random.key(0))
    >>> v = subspace.at_level(s, net, width=0.4)
    >>> net.apply(v, np.zeros((2, 8, 8, 1), np.float32)).shape
    (2, 10)
    >>> subnets.cost.macs(net, net.graph.widths_of(v)) < 0.25 * subnets.cost.macs(net)
    True

References:
    Nunez et al., LCS: Learning Compressible Subspaces for Adaptive Network Compression at
    Inference Time (arXiv:2110.04252).
"""

from subnets.subspace.compress import (
    ACT_RANGES,
    OUT_OF_RANGE,
    Compression,
    RangeWarning,
    act_quant_apply,
    at,
    at_level,
    channel_counts,
    check_level,
    init_act_ranges,
    make,
    masked_apply,
    output_groups,
    quantized,
    structured,
    unstructured,
)
from subnets.subspace.core import (
    COMPRESSIONS,
    Subspace,
    init_line,
    init_point,
    line,
    line_paths,
    point,
    regulariser,
    weights,
)
from subnets.subspace.fit import DEFAULT_LEVELS, evaluate_levels, fit, load, save
from subnets.subspace.sliced import SlicedTrainStep, choose_step
from subnets.subspace.train import (
    LCSConfig,
    SubspaceState,
    TrainStep,
    data_mesh,
    default_config,
    default_optimizer,
    init_state,
    make_loss,
    make_train_step,
    merge_batch_stats,
    sample_alphas,
    trainable,
)

__all__ = [
    "COMPRESSIONS",
    "Compression",
    "DEFAULT_LEVELS",
    "LCSConfig",
    "Subspace",
    "SlicedTrainStep",
    "SubspaceState",
    "choose_step",
    "TrainStep",
    "data_mesh",
    "default_config",
    "default_optimizer",
    "evaluate_levels",
    "fit",
    "init_state",
    "load",
    "make_loss",
    "make_train_step",
    "masked_apply",
    "merge_batch_stats",
    "output_groups",
    "sample_alphas",
    "save",
    "trainable",
    "ACT_RANGES",
    "act_quant_apply",
    "init_act_ranges",
    "at",
    "at_level",
    "channel_counts",
    "check_level",
    "OUT_OF_RANGE",
    "RangeWarning",
    "init_line",
    "init_point",
    "line",
    "line_paths",
    "make",
    "point",
    "quantized",
    "regulariser",
    "structured",
    "unstructured",
    "weights",
]
