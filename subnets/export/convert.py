"""JAX network -> TensorFlow Lite flatbuffer: full-integer int8 (default) or float32.

The eval-mode ``net.apply`` with the variables captured as constants goes through
``jax2tf.convert`` into a ``tf.function`` of static batch 1, then ``tf.lite.TFLiteConverter``.
With ``int8=True`` the converter runs full-integer post-training quantisation from a
representative sample (per-channel int8 weights, int8 activations, int8 input and output, only
``TFLITE_BUILTINS_INT8`` ops); eval-mode BatchNorm is constant-folded into the preceding conv by
the converter, so a zoo DS-CNN becomes conv/depthwise/pointwise/sum/fully-connected only. The
result is checked against the (op, tensor type) pairs TFLite-Micro has
(:func:`subnets.export.tflm.check_ops`) and, with ``int8``, that every op reads and writes integer
tensors only, so an unsupported op fails here, by name, instead of in a device build. Tensor names
are stripped (TFLM never reads them).

TensorFlow is an optional dependency (``pip install subnets[export]``), imported lazily.

Example:
    >>> import jax, numpy as np, subnets
    >>> from subnets.export import tflite
    >>> net = subnets.zoo.create("dnn-s", num_classes=4, input_shape=(8,))
    >>> v = net.init(jax.random.key(0))
    >>> rep = np.random.default_rng(0).random((16, 8), dtype=np.float32)
    >>> model = tflite(net, v, representative=rep)
    >>> model[4:8]  # the TFLite file identifier
    b'TFL3'

References:
    Jacob et al., Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-
    Only Inference (CVPR 2018); Corti et al., REDS (arXiv:2311.13349), Sec. 5 (TFLM deployment).
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from subnets.export.errors import ConversionError, MissingDependencyError
from subnets.export.tflm import check_ops, strip_names

__all__ = ["ConversionError", "MissingDependencyError", "tflite"]




def require_tensorflow() -> Any:
    """Import TensorFlow quietly, or say how to install it."""
    # TF's C++ start-up logging floods stderr; keep warnings and errors only, unless set.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise MissingDependencyError(
            "export to TensorFlow Lite needs TensorFlow: pip install 'subnets[export]' "
            f"(import failed: {e})") from e
    return tf


def _representative(rep: Any, input_shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(rep, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"representative must be an array of inputs, got {type(rep)}") from e
    if arr.ndim != len(input_shape) + 1 or tuple(arr.shape[1:]) != tuple(input_shape):
        raise ValueError(f"representative has shape {arr.shape}; expected (N,) + the net's "
                         f"input_shape {tuple(input_shape)}")
    if arr.shape[0] < 1:
        raise ValueError("representative is empty: int8 quantisation needs at least one sample "
                         "(a few hundred training inputs calibrate well)")
    if not np.all(np.isfinite(arr)):
        raise ValueError("representative contains NaN or infinite values")
    return arr


def tflite(net: Any, variables: Mapping, *, representative: Any = None, int8: bool = True,
           check: bool = True) -> bytes:
    """Convert ``net.apply(variables, x)`` (eval mode, batch 1) to a TFLite flatbuffer.

    Args:
        net: anything with ``apply(variables, x)`` and ``input_shape`` (a zoo :class:`Net`).
        variables: plain nested dict (full or width-sliced: the model is as small as the arrays).
        representative: float inputs, shape ``(N,) + net.input_shape``, drawn from the training
            data; calibrates the int8 activation ranges. Required when ``int8``.
        int8: full-integer quantisation (int8 input/output, builtin int8 ops only); ``False``
            gives a float32 model.
        check: refuse a model with an op TFLite-Micro lacks (:class:`UnsupportedOpError`).

    Returns:
        The ``.tflite`` flatbuffer bytes.

    Raises:
        ValueError: a representative set of the wrong shape, or missing with ``int8``.
        UnsupportedOpError: the converted model needs an op TFLite-Micro does not have, or
            has no kernel for its tensor type (e.g. an int8 EXP).
        ExportError: ``int8`` but a float tensor survived (not full int8).
        ConversionError: the TFLite converter itself cannot lower an op (named).
        MissingDependencyError: TensorFlow is not installed.
    """
    input_shape = tuple(int(s) for s in net.input_shape)
    rep = None
    if int8:
        if representative is None:
            raise ValueError("int8 export needs representative=(N,)+input_shape float inputs "
                             "from the training data (or pass int8=False for a float model)")
        rep = _representative(representative, input_shape)
    tf = require_tensorflow()
    from jax.experimental import jax2tf

    net = export_view(net)
    # numpy leaves become tf constants that the converter folds (BatchNorm into conv weights).
    consts = _to_numpy(variables)

    def forward(x):
        return net.apply(consts, x)

    tf_fn = tf.function(jax2tf.convert(forward, with_gradient=False), autograph=False,
                        input_signature=[tf.TensorSpec((1,) + input_shape, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf_fn.get_concrete_function()], tf_fn)
    if int8:
        def samples():
            for row in rep:
                yield [row[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": harmless for PTQ from a dataset.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        try:
            model = bytes(converter.convert())
        except Exception as e:  # the converter raises several unrelated types
            raise _conversion_error(net, e) from e
    model = strip_names(model)
    if check:
        check_ops(model, int8=int8)
    return model


def export_view(net: Any) -> Any:
    """The same network built from ops TFLite maps one to one (same variables, same function).

    Zoo DS-CNNs compute depthwise convs as shifted sums on the CPU (faster under XLA); TFLite
    would keep those as PAD/SLICE/MUL/ADD chains, so export asks for the grouped-conv form,
    which converts to a single DEPTHWISE_CONV_2D.
    """
    if dataclasses.is_dataclass(net) and getattr(net, "depthwise", "conv") != "conv":
        return dataclasses.replace(net, depthwise="conv")
    return net


def _conversion_error(net: Any, e: Exception) -> ConversionError:
    text = str(e)
    # MLIR diagnostics read "error: 'vhlo.sort_v1' op is not part of ..."; keep the op names.
    ops = sorted(set(re.findall(r"'([A-Za-z_][\w.]*)' op (?:is|was)", text)))
    what = f"op(s) {', '.join(ops)}" if ops else "the network"
    hint = (" (tf.XlaCallModule left over means a JAX primitive with no TFLite lowering, e.g."
            " lax.top_k)" if "tf.XlaCallModule" in ops else "")
    first = next((ln.strip() for ln in text.splitlines() if "error" in ln.lower()), text[:300])
    return ConversionError(f"TFLite conversion of {getattr(net, 'name', type(net).__name__)} "
                           f"failed on {what}{hint}: {first[:400]}", ops)


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)
