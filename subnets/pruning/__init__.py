"""Pruning pipelines: masked training, IMP with rewinding, exact dead-structure removal.

Masks everywhere are ``{full variables path: bool keep-mask}`` for prunable kernels, e.g.
``{("params", "conv0", "kernel"): array}``, the form :func:`subnets.transforms.topk_masks`
returns.

Example:
    >>> import jax, optax, subnets
    >>> from subnets import pruning
    >>> net = subnets.zoo.create("dnn-s", num_classes=4)
    >>> v = net.init(jax.random.key(0))
    >>> masks = subnets.topk_masks(v, 0.5, exclude=None)
    >>> tx = pruning.masked_optimizer(optax.adam(1e-3), masks)
    >>> round(pruning.density(masks), 2)
    0.5

References:
    Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019); Eccles et al., DNNShifter
    (arXiv:2309.06973).
"""

from subnets.pruning.imp import ImpLevel, imp, magnitude_prune, make_train_fn
from subnets.pruning.masked import (
    MaskedState,
    apply_masks,
    density,
    mask_tree,
    masked,
    masked_optimizer,
    masks_from_tree,
    set_masks,
    sparsity_report,
)
from subnets.pruning.pai import pai_masks, prune_at_init
from subnets.pruning.pai import scores as pai_scores
from subnets.pruning.pipeline import PruneConfig, run_pruning
from subnets.pruning.reconvene import ReconveneResult, reconvene, structured_init
from subnets.pruning.remove import remove_dead
from subnets.pruning.scoring import (
    DEFAULT_FLOOR,
    CollapseWarning,
    Floor,
    collapse_report,
    keep_masks,
)

__all__ = [
    "DEFAULT_FLOOR",
    "CollapseWarning",
    "Floor",
    "ImpLevel",
    "MaskedState",
    "PruneConfig",
    "ReconveneResult",
    "apply_masks",
    "collapse_report",
    "density",
    "imp",
    "magnitude_prune",
    "keep_masks",
    "make_train_fn",
    "mask_tree",
    "masked",
    "masked_optimizer",
    "masks_from_tree",
    "pai_masks",
    "pai_scores",
    "prune_at_init",
    "reconvene",
    "remove_dead",
    "run_pruning",
    "set_masks",
    "sparsity_report",
    "structured_init",
]
