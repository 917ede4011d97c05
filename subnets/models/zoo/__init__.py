"""The model zoo: Flax models exposed functionally, each with its channel graph.

Example:
    >>> import jax, subnets
    >>> net = subnets.zoo.create("ds-cnn-s", num_classes=12)
    >>> v = net.init(jax.random.key(0))
    >>> net.apply(v, jax.numpy.zeros((2, 49, 10, 1))).shape
    (2, 12)
    >>> len(net.graph.free)
    5

References:
    Zhang et al., Hello Edge (arXiv:1711.07128); Nunez et al., LCS (arXiv:2110.04252);
    Eccles et al., DNNShifter (2023).
"""

from __future__ import annotations

from collections.abc import Callable

from subnets.models.zoo.common import NORMS, Net
from subnets.models.zoo.kws import CNNConfig, DNNConfig, DSCNNConfig, make_cnn, make_dnn, make_dscnn
from subnets.models.zoo.resnet import PreResNetConfig, make_preresnet
from subnets.models.zoo.vgg import VGGConfig, make_vgg

__all__ = ["NAMES", "NORMS", "Net", "create", "default_classes", "from_meta"]

KWS_FLAT = (250,)
KWS_MAP = (49, 10, 1)

# name -> (builder, config, default input shape, default norm)
_REGISTRY: dict[str, tuple[Callable, object, tuple, str]] = {
    "dnn-s": (make_dnn, DNNConfig((144, 144, 144)), KWS_FLAT, "none"),
    "dnn-m": (make_dnn, DNNConfig((256, 256, 256)), KWS_FLAT, "none"),
    "dnn-l": (make_dnn, DNNConfig((436, 436, 436)), KWS_FLAT, "none"),
    "cnn-s": (make_cnn, CNNConfig((28, 30), 16), KWS_MAP, "batch"),
    "cnn-m": (make_cnn, CNNConfig((64, 48), 16), KWS_MAP, "batch"),
    "cnn-l": (make_cnn, CNNConfig((60, 76), 58), KWS_MAP, "batch"),
    "ds-cnn-s": (make_dscnn, DSCNNConfig(64, 4), KWS_MAP, "batch"),
    "ds-cnn-m": (make_dscnn, DSCNNConfig(172, 4, stem_stride=(2, 1), first_dw_stride=(2, 2)),
                 KWS_MAP, "batch"),
    "ds-cnn-l": (make_dscnn, DSCNNConfig(276, 5, stem_stride=(2, 1), first_dw_stride=(2, 2)),
                 KWS_MAP, "batch"),
    "vision-ds-cnn": (make_dscnn, DSCNNConfig(64, 4, stem_kernel=(3, 3)), (28, 28, 1), "batch"),
    "cpreresnet20": (make_preresnet, PreResNetConfig(), (32, 32, 3), "batch"),
    "vgg16": (make_vgg, VGGConfig(), (32, 32, 3), "batch"),
}

NAMES: tuple[str, ...] = tuple(_REGISTRY)

# Class counts of the data sets the papers use: 12 keywords (Speech Commands) for the KWS
# models, 10 classes (CIFAR-10, Fashion-MNIST) for the vision ones.
_DEFAULT_CLASSES = {n: 12 if _REGISTRY[n][2] in (KWS_FLAT, KWS_MAP) else 10 for n in NAMES}


def default_classes(name: str) -> int:
    """The class count ``name`` is usually trained with (12 for KWS models, 10 for vision)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; the zoo has {', '.join(NAMES)}")
    return _DEFAULT_CLASSES[name]


def from_meta(meta: dict) -> Net:
    """The zoo model a version-1 saved file names (``model``, ``num_classes``, ``input_shape``,
    ``norm`` keys): how files written before graphs were stored still load."""
    return create(str(meta["model"]), num_classes=int(meta["num_classes"]),
                  input_shape=tuple(int(s) for s in meta["input_shape"]), norm=meta.get("norm"))


def create(name: str, *, num_classes: int | None = None, input_shape: tuple[int, ...] | None = None,
           norm: str | None = None) -> Net:
    """Build a zoo network.

    Args:
        name: one of :data:`NAMES`.
        num_classes: classifier outputs (default: :func:`default_classes`).
        input_shape: one example's shape without the batch axis (default: the model's own,
            e.g. 49x10x1 for KWS CNNs; DNNs flatten whatever they get).
        norm: ``"batch"``, ``"group"``, ``"instance"`` or ``"none"`` (default: the model's own).

    Returns:
        A :class:`Net` with ``init``, ``apply``, ``graph`` and ``name``.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; the zoo has {', '.join(NAMES)}")
    if num_classes is None:
        num_classes = _DEFAULT_CLASSES[name]
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    builder, cfg, default_shape, default_norm = _REGISTRY[name]
    shape = tuple(int(s) for s in (input_shape or default_shape))
    if builder is not make_dnn and len(shape) != 3:  # DNNs flatten any shape
        raise ValueError(f"{name} needs an (H, W, C) input_shape, got {shape}")
    return builder(name, cfg, num_classes, shape, norm or default_norm)
