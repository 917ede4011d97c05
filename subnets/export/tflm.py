"""Run a TFLite model in the TFLite-Micro interpreter, measure its arena, check its ops.

``tflm_run`` executes the exact C++ kernels a microcontroller build links (the reference kernels
of the ``tflite_micro`` Python package), one sample at a time as a device would, quantising float
inputs and dequantising outputs with the model's own scales. ``measure_arena`` finds the smallest
tensor arena with which the interpreter allocates and invokes the model, by bisection over real
allocations: measured, not estimated. The host build has 64-bit pointers, so the number slightly
overstates what a 32-bit Cortex-M needs for the same model (optimised kernels such as CMSIS-NN
may add scratch buffers of their own).

``check_ops`` reads the flatbuffer's operator codes and refuses any op TFLite-Micro does not
register, naming it, so an unsupported model never reaches a device build.

Example:
    >>> import jax, numpy as np, subnets
    >>> from subnets.export import tflite, tflm_run, measure_arena, model_ops
    >>> net = subnets.zoo.create("dnn-s", num_classes=4, input_shape=(8,))
    >>> x = np.random.default_rng(0).random((16, 8), dtype=np.float32)
    >>> model = tflite(net, net.init(jax.random.key(0)), representative=x)
    >>> tflm_run(model, x[:3]).shape
    (3, 4)
    >>> "FULLY_CONNECTED" in model_ops(model), measure_arena(model) > 0
    (True, True)

References:
    David et al., TensorFlow Lite Micro (MLSys 2021); Corti et al., REDS (arXiv:2311.13349).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from typing import Any

import numpy as np

from subnets.export.arena import measure
from subnets.export.errors import (
    ArenaError,
    ExportError,
    MissingDependencyError,
    UnsupportedOpError,
)

# Builtin ops that TFLite-Micro's op resolver can register (tflite-micro 2025, the kernels in
# tensorflow/lite/micro/kernels). Anything else, and every custom op, is refused.
TFLM_OPS: frozenset[str] = frozenset("""
ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND
BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM DEPTH_TO_SPACE
DEPTHWISE_CONV_2D DEQUANTIZE DIV ELU EMBEDDING_LOOKUP EQUAL EXP EXPAND_DIMS FILL FLOOR FLOOR_DIV
FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER GREATER_EQUAL HARD_SWISH IF L2_NORMALIZATION
L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC LOG_SOFTMAX
MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE
READ_VARIABLE REDUCE_MAX REDUCE_MIN RELU RELU6 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR
REVERSE_V2 ROUND RSQRT SELECT_V2 SHAPE SIN SLICE SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT
SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH TRANSPOSE
TRANSPOSE_CONV UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE
""".split())




def _runtime() -> Any:
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as e:

        raise MissingDependencyError(
            "running models in TFLite-Micro needs the tflite-micro package: "
            f"pip install 'subnets[export]' (import failed: {e})") from e
    return runtime


def model_ops(model: bytes) -> list[str]:
    """Names of the operators a ``.tflite`` flatbuffer uses (``CUSTOM:name`` for custom ops)."""
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise ValueError(f"not a TFLite flatbuffer ({len(model)} bytes, identifier "
                         f"{bytes(model[4:8])!r}, expected b'TFL3')")
    runtime = _runtime()
    schema = runtime.schema_fb
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    parsed = runtime.convert_bytearray_to_object(bytearray(model))
    used = sorted({op.opcodeIndex for sg in parsed.subgraphs or () for op in sg.operators or ()})
    out = []
    for i in used:
        code = parsed.operatorCodes[i]
        builtin = runtime.get_builtin_code_from_operator_code(code)
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode
            custom = custom.decode() if isinstance(custom, bytes) else str(custom)
            out.append(f"CUSTOM:{custom}")
        else:
            out.append(names.get(builtin, f"BUILTIN_{builtin}"))
    return out


# Ops whose TFLite-Micro kernels register float32 only (tensorflow/lite/micro/kernels, 2025):
# an int8 tensor into one of them fails at Prepare, whatever the arena.
FLOAT_ONLY_OPS: frozenset[str] = frozenset(
    "EXP SQRT LOG SIN COS FLOOR CEIL ROUND SQUARE FLOOR_DIV FLOOR_MOD L2_POOL_2D".split())


def op_types(model: bytes) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """Every operator in execution order as (name, input tensor types, output tensor types)."""
    ops_by_index = model_ops(model)  # also validates the identifier
    del ops_by_index
    runtime = _runtime()
    schema = runtime.schema_fb
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    tnames = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    parsed = runtime.convert_bytearray_to_object(bytearray(model))
    out = []
    for sg in parsed.subgraphs or ():
        tensors = sg.tensors or []
        for op in sg.operators or ():
            code = parsed.operatorCodes[op.opcodeIndex]
            builtin = runtime.get_builtin_code_from_operator_code(code)
            kinds = [tuple(tnames.get(tensors[i].type, str(tensors[i].type))
                           for i in (ids if ids is not None else ()) if i >= 0)
                     for ids in (op.inputs, op.outputs)]
            out.append((names.get(builtin, f"BUILTIN_{builtin}"), kinds[0], kinds[1]))
    return out


def check_int8(model: bytes) -> None:
    """Refuse a model that is not full int8: any op reading or writing a float tensor (e.g. a
    DEQUANTIZE -> float op -> QUANTIZE island), named by position and op."""

    for n, (name, ins, outs) in enumerate(op_types(model)):
        if "FLOAT32" in ins or "FLOAT32" in outs or "FLOAT16" in ins + outs:
            raise ExportError(f"the model is not full int8: op {n} ({name}) has tensor types "
                              f"in {list(ins)} -> out {list(outs)}; a float op survived "
                              "quantisation (an op the converter could not quantise)")


def check_ops(model: bytes, *, int8: bool = False) -> list[str]:
    """:func:`model_ops` if TFLite-Micro has a kernel for each (op, tensor type), else
    :class:`UnsupportedOpError`; with ``int8`` also :func:`check_int8`."""
    ops = model_ops(model)
    missing = [op for op in ops if op not in TFLM_OPS]
    if not missing:
        missing = sorted({f"{name}({ins[0]})" for name, ins, _ in op_types(model)
                          if name in FLOAT_ONLY_OPS and ins and ins[0] != "FLOAT32"})
    if missing:
        raise UnsupportedOpError(missing)
    if int8:
        check_int8(model)
    return ops


def strip_names(model: bytes) -> bytes:
    """The same flatbuffer without tensor and subgraph names (TFLM never reads them; they are
    ~8 KB of a small model). Signature names are kept (they name inputs for TFLite)."""
    import flatbuffers

    runtime = _runtime()
    parsed = runtime.convert_bytearray_to_object(bytearray(model))
    for sg in parsed.subgraphs or ():
        sg.name = ""
        for t in sg.tensors or ():
            t.name = ""
    builder = flatbuffers.Builder(len(model))
    builder.Finish(parsed.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@contextlib.contextmanager
def _captured_stderr():
    """Collect what C++ writes to file descriptor 2 (TFLM reports errors only there)."""
    buf: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            yield buf
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            buf.append(tmp.read().decode(errors="replace"))


def _interpreter(model: bytes, arena_size: int) -> tuple[Any, str]:
    """An interpreter, or (None, TFLM's error log)."""
    runtime = _runtime()
    with _captured_stderr() as log:
        try:
            interp = runtime.Interpreter.from_bytes(model, arena_size=int(arena_size))
        except RuntimeError:
            interp = None
    text = "".join(log)
    missing = re.findall(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'", text)
    if missing:
        raise UnsupportedOpError(missing)
    return interp, text


def measure_arena(model: bytes, *, resolution: int = 16) -> int:
    """Smallest tensor arena (bytes) with which TFLite-Micro allocates and invokes ``model``.

    Measured by bisection over real interpreter allocations (see :mod:`subnets.export.arena`),
    rounded up to ``resolution`` (TFLM aligns to 16). Cached per model.
    """
    check_ops(model)
    return measure(model, resolution=resolution)


def tflm_run(model: bytes, x: Any, *, arena_size: int | None = None,
             dequantize: bool = True) -> np.ndarray:
    """Run every sample of ``x`` through the TFLite-Micro interpreter, batch 1 at a time.

    Args:
        model: ``.tflite`` bytes (int8 or float).
        x: a batch, shape ``(N,) + input shape`` of the model (without its batch axis of 1).
            Float inputs to an int8 model are quantised with the model's input scale and zero
            point; integer inputs are passed as they are.
        arena_size: tensor arena bytes (default: the measured minimum, :func:`measure_arena`).
        dequantize: return float outputs ``(q - zero_point) * scale`` instead of raw int8.

    Returns:
        Outputs stacked to shape ``(N,) + output shape`` (without the batch axis of 1).

    Raises:
        UnsupportedOpError: an op TFLite-Micro lacks.
        ArenaError: ``arena_size`` is below what the model needs (says how much).
    """
    needed = measure_arena(model)
    size = needed if arena_size is None else int(arena_size)
    if size < needed:
        # Never build an interpreter that cannot fit: TFLM's Python wrapper may crash then.
        raise ArenaError(f"arena_size {size:,} B is too small: TFLite-Micro needs {needed:,} B "
                         f"for this model ({needed - size:,} B more)")
    interp, log = _interpreter(model, size)
    if interp is None:
        raise ArenaError(f"TFLite-Micro could not allocate the model in a {size:,} B arena: "
                         f"{log.strip()[:500]}")
    d_in, d_out = interp.get_input_details(0), interp.get_output_details(0)
    shape_in = tuple(int(s) for s in d_in["shape"])
    x = np.asarray(x)
    if x.shape[1:] != shape_in[1:] or shape_in[0] != 1:
        raise ValueError(f"x has shape {x.shape}; the model takes (N,) + {shape_in[1:]}")
    if np.issubdtype(x.dtype, np.floating) and np.dtype(d_in["dtype"]) != np.float32:
        x = _quantize(x, d_in)
    x = x.astype(d_in["dtype"], copy=False)
    outs = []
    for row in x:
        interp.set_input(row[None], 0)
        try:
            interp.invoke()
        except RuntimeError as e:
            raise ArenaError(f"TFLite-Micro invoke failed ({e}); its log is on stderr") from e
        outs.append(np.array(interp.get_output(0))[0])
    out = np.stack(outs) if outs else np.zeros((0,) + tuple(d_out["shape"][1:]), d_out["dtype"])
    if dequantize and np.dtype(d_out["dtype"]) != np.float32:
        q = d_out["quantization_parameters"]
        out = (out.astype(np.float32) - np.float32(q["zero_points"][0])) * np.float32(
            q["scales"][0])
    return out


def _quantize(x: np.ndarray, details: dict) -> np.ndarray:
    q = details["quantization_parameters"]
    info = np.iinfo(details["dtype"])
    scaled = np.round(x / q["scales"][0]) + q["zero_points"][0]
    return np.clip(scaled, info.min, info.max).astype(details["dtype"])
