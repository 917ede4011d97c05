"""The TFLite path's checks: full int8 from the model's own tensor types, (op, type) against
TFLite-Micro's kernels, names stripped."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _mcu_models as mm  # noqa: E402

pytest.importorskip("tflite_micro")

from subnets.export.errors import ExportError, UnsupportedOpError  # noqa: E402
from subnets.export.int8_tflite import level_tflite  # noqa: E402
from subnets.export.nested import prepare  # noqa: E402
from subnets.export.tflm import check_int8, check_ops, op_types, strip_names  # noqa: E402


def _model(mutate=None) -> bytes:
    """A small int8 model (the nested exporter's level 0), optionally edited object-wise."""
    import flatbuffers
    from tflite_micro.python.tflite_micro import runtime

    fam = mm.dscnn()
    rep = np.random.default_rng(0).normal(0, 1, (4,) + fam.net.graph.input_shape)
    steps, qz = prepare(fam, rep)
    model = level_tflite(steps, qz["widths"][0], 0)
    if mutate is None:
        return model
    obj = runtime.convert_bytearray_to_object(bytearray(model))
    mutate(runtime.schema_fb, obj)
    b = flatbuffers.Builder(1024)
    b.Finish(obj.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_full_int8_model_passes_and_names_are_stripped():
    def name_all(sch, obj):
        for t in obj.subgraphs[0].tensors:
            t.name = "a_rather_long_tensor_name_from_the_converter/with/scopes"

    named = _model(name_all)
    assert b"a_rather_long_tensor_name" in named
    stripped = strip_names(named)
    assert b"a_rather_long_tensor_name" not in stripped and len(stripped) < len(named)
    assert op_types(stripped) == op_types(named)
    check_ops(stripped, int8=True)


def test_float_island_is_refused_by_position_and_op():
    def float_output(sch, obj):  # the last op writes float32: a dequantised tail
        sg = obj.subgraphs[0]
        sg.tensors[sg.operators[-1].outputs[0]].type = sch.TensorType.FLOAT32

    model = _model(float_output)
    with pytest.raises(ExportError, match=r"not full int8: op \d+ \(CONV_2D\)"):
        check_int8(model)
    check_ops(model)  # the op names alone are all fine: only the type check catches it


def test_int8_op_without_int8_kernel_is_refused_by_op_and_type():
    def exp_op(sch, obj):
        code = sch.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = sch.BuiltinOperator.EXP
        code.version = 1
        obj.operatorCodes.append(code)
        sg = obj.subgraphs[0]
        op = sch.OperatorT()
        op.opcodeIndex = len(obj.operatorCodes) - 1
        out = sg.outputs[0]
        t = sch.TensorT()
        t.shape, t.type, t.buffer, t.name = list(sg.tensors[out].shape), \
            sch.TensorType.INT8, 0, ""
        t.quantization = sg.tensors[out].quantization
        sg.tensors.append(t)
        op.inputs, op.outputs = [out], [len(sg.tensors) - 1]
        sg.operators.append(op)
        sg.outputs = [len(sg.tensors) - 1]

    with pytest.raises(UnsupportedOpError, match=r"EXP\(INT8\)"):
        check_ops(_model(exp_op))
