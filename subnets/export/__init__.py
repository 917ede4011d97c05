"""Export to TensorFlow Lite and TFLite-Micro: int8 models per level, C arrays, board budgets,
and :func:`nested_c`: one C99 artifact whose levels share their weights.

TensorFlow and tflite-micro are optional (``pip install subnets[export]``); they are imported
only when a model is converted or run, and a clear :class:`MissingDependencyError` says so.

Example:
    >>> import jax, numpy as np, subnets
    >>> from subnets import export
    >>> net = subnets.zoo.create("dnn-s", num_classes=4, input_shape=(8,))
    >>> x = np.random.default_rng(0).random((16, 8), dtype=np.float32)
    >>> model = export.tflite(net, net.init(jax.random.key(0)), representative=x)
    >>> export.tflm_run(model, x[:2]).shape
    (2, 4)

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 5; David et al., TensorFlow Lite Micro
    (MLSys 2021).
"""

from subnets.export.carray import c_array, write_c_array
from subnets.export.convert import tflite
from subnets.export.errors import (
    ArenaError,
    ConversionError,
    ExportError,
    MissingDependencyError,
    UnsupportedOpError,
)
from subnets.export.family import (
    BOARDS,
    Board,
    SlicedLevels,
    evaluate_model,
    export_family,
    get_board,
    uniform_levels,
)
from subnets.export.nested import nested_c
from subnets.export.tflm import (
    TFLM_OPS,
    check_ops,
    measure_arena,
    model_ops,
    tflm_run,
)

__all__ = [
    "BOARDS",
    "TFLM_OPS",
    "ArenaError",
    "Board",
    "ConversionError",
    "ExportError",
    "MissingDependencyError",
    "SlicedLevels",
    "UnsupportedOpError",
    "c_array",
    "check_ops",
    "evaluate_model",
    "export_family",
    "get_board",
    "measure_arena",
    "model_ops",
    "nested_c",
    "tflite",
    "tflm_run",
    "uniform_levels",
    "write_c_array",
]
