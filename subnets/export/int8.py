"""Quantise a nested family once, TFLite-Micro's way, from the graph's program.

The program (``graph.program``: ops in execution order, see the graph contract) is lowered to a
short list of int8 steps: a ``layer`` with the ``norm`` and ``relu``/``relu6`` that follow it
becomes one conv/depthwise step (a dense layer is a 1x1 conv; a dense layer after a flatten is a
VALID conv whose window covers the map), ``mean``/``avg_pool``/``max_pool`` become pools and
``add`` a residual add. Anything else is refused by :class:`~subnets.export.errors.ExportError`
naming the op.

Quantisation (the scheme of TFLite-Micro's reference kernels):

- weights: per output channel, symmetric int8 in [-127, 127], zero point 0, scale
  ``max|w| / 127`` over the FULL layer's channel, so every level reads the same bytes (a
  prefix). The norm that follows a layer is NOT folded into the shared bytes (that would need
  one copy per level when levels keep their own statistics); it goes into each level's
  per-channel effective filter scale ``s_w * |gamma_l|`` and int32 bias, and a negative gain
  flips the sign of that level's product sum (stored as a negative multiplier);
- activations: int8 with a scale and a zero point from the range observed on ``representative``.
  One range per tensor, the union over every level's float run ("widest-level-safe"): then a
  level whose norm statistics equal another's shares its requantisation tables (a prefix), so
  flash stays near the largest level alone; a per-level range would cost one table per level
  and layer and buy < 1 LSB of resolution on the narrow levels;
- requantisation: TFLite's ``QuantizeMultiplier`` from the float32 scales exactly as TFLM
  computes it, so the C runtime and TFLM's kernels round identically.

Example:
    >>> from subnets.export.int8 import quantize_multiplier
    >>> quantize_multiplier(0.5), quantize_multiplier(0.75)
    ((1073741824, 0), (1610612736, 0))

References:
    Jacob et al., Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-
    Only Inference (CVPR 2018); David et al., TensorFlow Lite Micro (MLSys 2021); Corti et al.,
    REDS (arXiv:2311.13349), Sec. 3.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from subnets.export.errors import ExportError
from subnets.export.int8_float import norm_affine, run_float
from subnets.graph import get_path

ACTIVATIONS = ("relu", "relu6")
__all__ = ["ACTIVATIONS", "Step", "add_params", "lower", "norm_affine", "quantize",
           "quantize_multiplier", "round_away"]


@dataclass
class Step:
    """One int8 step of the C program (a lowered run of graph ops)."""

    kind: str                          # "conv" | "depthwise" | "avgpool" | "maxpool" | "add"
    src: int
    dst: int
    in_group: str
    out_group: str
    src2: int = -1
    kernel: tuple | None = None        # kernel path
    bias: tuple | None = None
    norm: Any = None                   # graph Norm
    act: str | None = None
    in_hw: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    window: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    flatten: bool = False
    affine: bool = False               # a standalone norm: per-channel gain and offset only
    name: str = ""
    q: dict = field(default_factory=dict)  # filled by quantize()


def _attrs(op: Any) -> dict:
    return dict(op.attrs or ())


def _hw(spatial: tuple) -> tuple[int, int]:
    s = tuple(int(v) for v in spatial)
    return (s + (1, 1))[:2] if len(s) < 2 else (s[0], s[1])


def _pair(v: Any, default: int) -> tuple[int, int]:
    if v is None:
        return (default, default)
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    return (v + (1,))[:2] if len(v) == 1 else v[:2]


def _spatial(v: Any, rank: int) -> Any:
    """A pool attribute's spatial entries: traced attrs cover (batch, *spatial, channel)."""
    v = tuple(v) if isinstance(v, tuple | list) else v
    return v[1:-1] if isinstance(v, tuple) and len(v) == rank else v


def lower(graph: Any) -> tuple[list[Step], int]:
    """The graph's program as int8 steps, and the value id of the logits.

    Raises:
        ExportError: the graph has no program, or an op (named by position and kind) has no
            int8 kernel.
    """
    program = tuple(getattr(graph, "program", ()) or ())
    if not program:
        raise ExportError("nested_c: the graph has no program (ops in execution order); trace "
                          "the model with subnets.graph.trace to get one")
    uses: dict[int, int] = {}
    for op in program:
        for v in op.inputs:
            uses[v] = uses.get(v, 0) + 1
    steps: list[Step] = []
    producer: dict[int, Step] = {}
    group: dict[int, str] = {}
    hw: dict[int, tuple[int, int]] = {0: _hw(tuple(graph.input_shape)[:-1])}
    flat: dict[int, tuple[int, int]] = {}
    alias: dict[int, int] = {}
    logits = None

    def src(v: int) -> int:
        return alias.get(v, v)

    for n, op in enumerate(program):
        where = f"program op {n} ({op.kind}{' ' + '/'.join(op.ref) if op.ref else ''})"
        ins = [src(v) for v in op.inputs]
        if op.kind == "layer":
            layer = graph.layer(op.ref)
            if layer.feature_groups not in (1,) and layer.kind != "depthwise":
                raise ExportError(f"nested_c: {where}: grouped conv has no int8 kernel")
            group.setdefault(ins[0], layer.in_group)
            if layer.kind == "dense":
                # a flatten of S positions feeds a layer of window S (the graph's Layer);
                # a flatten that merges the input's own axes into its one group is a no-op
                spread = getattr(layer, "window", None)
                if op.inputs[0] in flat and (spread is None or int(spread) > 1):
                    win, fl = flat[op.inputs[0]], True
                else:
                    win, fl = (1, 1), False
                step = Step("conv", ins[0], op.output, layer.in_group, layer.out_group,
                            kernel=layer.path, bias=layer.bias, in_hw=win, out_hw=(1, 1),
                            window=win, flatten=fl)
            elif layer.kind in ("conv", "depthwise"):
                pads = tuple(tuple(int(a) for a in p) for p in layer.padding) or ((0, 0), (0, 0))
                step = Step(layer.kind, ins[0], op.output, layer.in_group, layer.out_group,
                            kernel=layer.path, bias=layer.bias, in_hw=_hw(layer.in_spatial),
                            out_hw=_hw(layer.out_spatial), window=_pair(layer.kernel_size, 1),
                            stride=_pair(layer.stride, 1), pad=(pads + ((0, 0),))[:2])
            else:
                raise ExportError(f"nested_c: {where}: layer kind {layer.kind!r} has no int8 "
                                  "kernel")
            step.name = "/".join(layer.path[1:-1] or layer.path)
            steps.append(step)
            producer[op.output] = step
        elif op.kind in ("norm", "act"):
            p = producer.get(ins[0])
            if op.kind == "norm":
                nm = graph.norm(op.ref)
                groups = getattr(nm, "num_groups", None)
                if nm.mean is None or nm.var is None or groups is not None:
                    raise ExportError(
                        f"nested_c: {where}: this norm computes its statistics from each input "
                        f"(num_groups={groups}, no running mean/var), so it is no fixed "
                        "per-channel affine and has no kernel; use a running-statistics "
                        "norm or none")
                ok = p is not None and p.kernel is not None and p.norm is None and \
                    p.act is None and uses.get(ins[0], 0) == 1
                if not ok:
                    # A norm on a value with other uses (pre-activation blocks) or after an
                    # add/pool: its own per-channel affine step, a 1x1 depthwise with weight 1.
                    g = group.get(ins[0], op.group)
                    h = hw.get(ins[0], (1, 1))
                    p = Step("depthwise", ins[0], op.output, g, g, norm=graph.norm(op.ref),
                             in_hw=h, out_hw=h, affine=True)
                    p.name = "/".join(op.ref[1:] or op.ref)
                    steps.append(p)
                else:
                    p.norm = graph.norm(op.ref)
            else:
                name = _attrs(op).get("name")
                if name not in ACTIVATIONS:
                    raise ExportError(f"nested_c: {where}: activation {name!r} has no int8 "
                                      f"kernel; supported: {', '.join(ACTIVATIONS)}")
                if p is None or p.kind in ("avgpool", "maxpool") or p.act is not None or \
                        uses.get(ins[0], 0) != 1:
                    raise ExportError(f"nested_c: {where}: an activation must directly follow "
                                      "a layer or add (its only use) to fuse as a clamp")
                p.act = name
            p.dst = op.output
            producer[op.output] = p
        elif op.kind == "flatten":
            flat[op.output] = hw.get(ins[0], (1, 1))
            alias[op.output] = ins[0]
            continue
        elif op.kind in ("mean", "avg_pool", "max_pool"):
            in_hw = hw.get(ins[0], (1, 1))
            g = group.get(ins[0], op.group)
            if op.kind == "mean":
                step = Step("avgpool", ins[0], op.output, g, g, in_hw=in_hw, out_hw=(1, 1),
                            window=in_hw)
            else:
                a = _attrs(op)
                rank = len(op.spatial) + 2  # the traced attrs cover (batch, *spatial, channel)
                window = _pair(_spatial(a.get("window"), rank), 1)
                stride = _pair(_spatial(a.get("stride"), rank), window[0])
                pads = a.get("padding") or ((0, 0), (0, 0))
                if isinstance(pads, str):
                    raise ExportError(f"nested_c: {where}: padding must be explicit (lo, hi)")
                pads = tuple(tuple(int(x) for x in p) for p in _spatial(tuple(pads), rank))
                if len(window) != 2 or len(pads) != 2:
                    raise ExportError(f"nested_c: {where}: only 2-D pooling has a kernel")
                if op.kind == "avg_pool" and any(any(p) for p in pads):
                    raise ExportError(
                        f"nested_c: {where}: a padded avg_pool averages the padded zeros too "
                        "(count_include_pad, as lax.reduce_window does), TFLite's AVERAGE_POOL "
                        "does not: no kernel; pad explicitly before the pool or use VALID")
                step = Step("avgpool" if op.kind == "avg_pool" else "maxpool", ins[0],
                            op.output, g, g, in_hw=in_hw, out_hw=_hw(op.spatial),
                            window=window, stride=stride, pad=pads)
            step.name = f"{op.kind}{n}"
            steps.append(step)
            producer[op.output] = step
        elif op.kind == "add":
            if len(ins) != 2:
                raise ExportError(f"nested_c: {where}: only two-input adds have a kernel")
            g = op.group or group.get(ins[0])
            h = _hw(op.spatial) if op.spatial else hw.get(ins[0], (1, 1))
            step = Step("add", ins[0], op.output, g, g, src2=ins[1], in_hw=h, out_hw=h)
            step.name = f"add{n}"
            steps.append(step)
            producer[op.output] = step
        elif op.kind == "output":
            logits = ins[0]
            continue
        else:
            raise ExportError(f"nested_c: {where}: op kind {op.kind!r} has no int8 kernel")
        out = producer[op.output]
        group[op.output] = out.out_group
        hw[op.output] = out.out_hw
    if logits is None:
        logits = steps[-1].dst if steps else 0
    if not steps or steps[-1].dst != logits:
        raise ExportError("nested_c: the logits must be the last op's output")
    return steps, logits


def round_away(x: Any) -> Any:
    """Round half away from zero (``std::round``, TFLite's ``TfLiteRound``)."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: ``real = m * 2**(shift - 31)``, ``m`` in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    fixed = int(round_away(q * float(1 << 31)))
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return (1 << 31) - 1, 30
    return fixed, shift


def act_range(act: str | None, scale: float, zp: int) -> tuple[int, int]:
    """TFLite's ``CalculateActivationRangeQuantized`` for int8."""
    def q(f: float) -> int:
        return zp + int(round_away(np.float32(f) / np.float32(scale)))

    if act == "relu":
        return max(-128, q(0.0)), 127
    if act == "relu6":
        return max(-128, q(0.0)), min(127, q(6.0))
    return -128, 127


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Scale (float32) and zero point of an int8 tensor covering ``[lo, hi]`` and 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(round_away(-128.0 - lo / scale), -128, 127))
    return scale, zp


def _rows(step: Step, kernel: np.ndarray, in_full: int) -> np.ndarray:
    """Full kernel output-unit-major: conv [out][kh][kw][in_full], depthwise [c][kh*kw]."""
    k = np.asarray(kernel, np.float64)
    if step.kind == "depthwise":
        return k.reshape(k.shape[0], k.shape[1], -1).transpose(2, 0, 1).reshape(k.shape[-1], -1)
    if k.ndim == 2:
        k = k.reshape(step.window[0], step.window[1], in_full, k.shape[-1])
    return k.transpose(3, 0, 1, 2).reshape(k.shape[-1], -1)


def quantize(family: Any, steps: list[Step], representative: np.ndarray) -> dict:
    """Quantise the shared weights and each level's tables; activation ranges from each level.

    Returns ``{"values": {id: (scale, zp)}, "widths": [level widths]}``; every weighted step
    gets ``q["weights"]`` (int8 rows), ``q["w_scale"]`` and ``q["levels"]`` (per level
    ``mult``, ``shift``, ``bias32``, ``f_scale``, ``sign``).
    """
    graph = family.net.graph
    full = {g.name: int(g.size) for g in graph.groups}
    widths = [{**full, **{k: int(v) for k, v in lv.items()}} for lv in family.levels]
    ranges: dict[int, list[float]] = {}
    for i in range(len(widths)):
        acts = run_float(steps, family.level_variables(i), representative)
        for v, a in acts.items():
            r = ranges.setdefault(v, [np.inf, -np.inf])
            r[0], r[1] = min(r[0], float(a.min())), max(r[1], float(a.max()))
    values = {v: activation_qparams(*r) for v, r in ranges.items()}
    for s in steps:  # pools keep their input's quantisation, as TFLite requires
        if s.kind in ("avgpool", "maxpool"):
            values[s.dst] = values[s.src]
    variables = family.variables
    for s in steps:
        s_in, zp_in = values[s.src]
        s_out, zp_out = values[s.dst]
        s.q = {"in": (s_in, zp_in), "out": (s_out, zp_out),
               "act": act_range(s.act, s_out, zp_out)}
        if s.kind == "add":
            s.q["in2"] = values[s.src2]
            continue
        if s.kernel is None and not s.affine:
            continue
        rows = (np.ones((full[s.out_group], 1)) if s.affine else
                _rows(s, get_path(variables, s.kernel), full[s.in_group]))
        w_scale = np.maximum(np.abs(rows).max(axis=1), 1e-12) / 127.0
        s.q["weights"] = np.clip(round_away(rows / w_scale[:, None]), -127, 127).astype(np.int8)
        s.q["w_scale"] = w_scale
        s.q["levels"] = [_level_tables(s, family.level_variables(i), w_scale, s_in, s_out,
                                       widths[i][s.out_group]) for i in range(len(widths))]
    return {"values": values, "widths": widths}


def _level_tables(s: Step, lv: dict, w_scale: np.ndarray, s_in: float, s_out: float,
                  c: int) -> dict:
    bias = np.zeros(c) if s.bias is None else np.asarray(get_path(lv, s.bias),
                                                         np.float64).reshape(-1)[:c]
    if s.norm is not None:
        gain, offset = norm_affine(lv, s.norm, c)
        bias = bias * gain + offset
    else:
        gain = np.ones(c)
    sign = np.where(gain < 0, -1, 1)
    f_scale = (w_scale[:c] * np.maximum(np.abs(gain), 1e-12)).astype(np.float32)
    mult, shift = zip(*(quantize_multiplier(float(np.float64(np.float32(s_in)) * float(f)
                                                  / float(np.float32(s_out))))
                        for f in f_scale), strict=True)
    b32 = round_away(bias / (np.float64(np.float32(s_in)) * f_scale.astype(np.float64)))
    return {"mult": np.asarray(mult, np.int64) * sign, "shift": np.asarray(shift, np.int64),
            "bias32": np.clip(b32, -2**31, 2**31 - 1).astype(np.int64), "f_scale": f_scale,
            "sign": sign}


def add_params(s1: float, s2: float, s_out: float) -> dict:
    """TFLite's int8 ADD multipliers (left shift 20), as TFLM's ``CalculateOpData``."""
    twice = 2.0 * float(max(np.float32(s1), np.float32(s2)))
    out = {}
    for key, real in (("in1", float(np.float32(s1)) / twice), ("in2", float(np.float32(s2)) /
                                                                twice),
                      ("out", twice / ((1 << 20) * float(np.float32(s_out))))):
        out[f"{key}_mult"], out[f"{key}_shift"] = quantize_multiplier(real)
    return out
