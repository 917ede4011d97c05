"""One level of the quantised family as an int8 ``.tflite`` (the same bytes and scales).

The flatbuffer is built directly from the quantiser's numbers (no converter), so TFLite-Micro
runs exactly the quantisation the C artifact holds: each level's weight prefix (sign-flipped
where that level's norm gain is negative), its effective per-channel filter scales, its int32
biases and the shared activation scales. Dense layers become 1x1 CONV_2D, global means
AVERAGE_POOL_2D, so every op is an int8 builtin TFLite-Micro has. Tensor names are empty.

Example:
    >>> from subnets.export.int8_tflite import tflite_padding
    >>> tflite_padding((10, 10), (3, 3), (1, 1), ((1, 1), (1, 1)), (10, 10))
    'SAME'

References:
    David et al., TensorFlow Lite Micro (MLSys 2021); the TFLite flatbuffer schema.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from subnets.export.errors import ExportError


def tflite_padding(in_hw: tuple, window: tuple, stride: tuple, pad: tuple,
                   out_hw: tuple) -> str:
    """``"VALID"`` or ``"SAME"`` if TFLite's rule gives exactly ``pad``, else ExportError."""
    valid = all(p == (0, 0) for p in pad) and all(
        o == (i - k) // s + 1 for i, k, s, o in zip(in_hw, window, stride, out_hw, strict=True))
    if valid:
        return "VALID"
    same = True
    for i, k, s, o, (lo, _hi) in zip(in_hw, window, stride, out_hw, pad, strict=True):
        total = max((o - 1) * s + k - i, 0)
        same &= o == -(-i // s) and lo == total // 2
    if same:
        return "SAME"
    raise ExportError(f"padding {pad} of a {window} window is neither TFLite's SAME nor VALID")


def level_tflite(steps: list, widths: dict, level: int) -> bytes:
    """The int8 flatbuffer of ``level`` (``widths`` its group widths)."""
    import flatbuffers
    from tflite_micro.python.tflite_micro import runtime

    sch = runtime.schema_fb
    tensors: list[Any] = []
    buffers = [sch.BufferT()]
    ids: dict[int, int] = {}

    def tensor(shape, ttype, scale=None, zp=None, data=None, qdim=0) -> int:
        t = sch.TensorT()
        t.shape = [int(s) for s in shape]
        t.type = ttype
        t.name = ""
        t.buffer = 0
        if data is not None:
            b = sch.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            buffers.append(b)
            t.buffer = len(buffers) - 1
        if scale is not None:
            q = sch.QuantizationParametersT()
            q.scale = [float(v) for v in np.atleast_1d(scale)]
            q.zeroPoint = [int(v) for v in np.atleast_1d(zp)]
            q.quantizedDimension = qdim
            t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    def value(v: int, hw: tuple, c: int, qp: tuple) -> int:
        if v not in ids:
            ids[v] = tensor((1, hw[0], hw[1], c), sch.TensorType.INT8, qp[0], qp[1])
        return ids[v]

    act = {None: sch.ActivationFunctionType.NONE, "relu": sch.ActivationFunctionType.RELU,
           "relu6": sch.ActivationFunctionType.RELU6}
    pads = {"SAME": sch.Padding.SAME, "VALID": sch.Padding.VALID}
    codes: list[int] = []
    ops = []
    first = steps[0]
    value(first.src, first.in_hw, widths[first.in_group], first.q["in"])
    for s in steps:
        cin, cout = widths[s.in_group], widths[s.out_group]
        x = ids[s.src]
        op = sch.OperatorT()
        if s.kind in ("conv", "depthwise"):
            t = s.q["levels"][level]
            w = s.q["weights"].astype(np.int32)
            kh, kw = s.window
            if s.kind == "conv":
                full_in = w.shape[1] // (kh * kw)
                w = w.reshape(-1, kh, kw, full_in)[:cout, :, :, :cin]
                w = w * t["sign"][:, None, None, None]
                filt = tensor((cout, kh, kw, cin), sch.TensorType.INT8, t["f_scale"],
                              np.zeros(cout, np.int64), w.astype(np.int8), 0)
                code, opt_type = sch.BuiltinOperator.CONV_2D, sch.BuiltinOptions.Conv2DOptions
                opt = sch.Conv2DOptionsT()
            else:
                w = (w[:cout] * t["sign"][:, None]).T.reshape(1, kh, kw, cout)
                filt = tensor((1, kh, kw, cout), sch.TensorType.INT8, t["f_scale"],
                              np.zeros(cout, np.int64), w.astype(np.int8), 3)
                code = sch.BuiltinOperator.DEPTHWISE_CONV_2D
                opt_type = sch.BuiltinOptions.DepthwiseConv2DOptions
                opt = sch.DepthwiseConv2DOptionsT()
                opt.depthMultiplier = 1
            bias = tensor((cout,), sch.TensorType.INT32,
                          np.float32(s.q["in"][0]) * t["f_scale"], np.zeros(cout, np.int64),
                          t["bias32"].astype(np.int32), 0)
            opt.padding = pads[tflite_padding(s.in_hw, s.window, s.stride, s.pad, s.out_hw)]
            opt.strideH, opt.strideW = s.stride
            opt.dilationHFactor = opt.dilationWFactor = 1
            opt.fusedActivationFunction = act[s.act]
            inputs = [x, filt, bias]
        elif s.kind in ("avgpool", "maxpool"):
            code = (sch.BuiltinOperator.AVERAGE_POOL_2D if s.kind == "avgpool"
                    else sch.BuiltinOperator.MAX_POOL_2D)
            opt_type, opt = sch.BuiltinOptions.Pool2DOptions, sch.Pool2DOptionsT()
            opt.padding = pads[tflite_padding(s.in_hw, s.window, s.stride, s.pad, s.out_hw)]
            opt.strideH, opt.strideW = s.stride
            opt.filterHeight, opt.filterWidth = s.window
            opt.fusedActivationFunction = act[s.act]
            inputs = [x]
        else:
            code, opt_type = sch.BuiltinOperator.ADD, sch.BuiltinOptions.AddOptions
            opt = sch.AddOptionsT()
            opt.fusedActivationFunction = act[s.act]
            inputs = [x, ids[s.src2]]
        if code not in codes:
            codes.append(code)
        op.opcodeIndex = codes.index(code)
        op.inputs = inputs
        op.outputs = [value(s.dst, s.out_hw, cout, s.q["out"])]
        op.builtinOptionsType, op.builtinOptions = opt_type, opt
        ops.append(op)
    sg = sch.SubGraphT()
    sg.tensors, sg.operators = tensors, ops
    sg.inputs, sg.outputs = [ids[first.src]], [ids[steps[-1].dst]]
    sg.name = ""
    model = sch.ModelT()
    model.version = 3
    model.description = ""
    model.subgraphs, model.buffers = [sg], buffers
    model.operatorCodes = []
    for c in codes:
        oc = sch.OperatorCodeT()
        oc.builtinCode = c
        oc.deprecatedBuiltinCode = min(c, 127)
        oc.version = 1
        model.operatorCodes.append(oc)
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())
