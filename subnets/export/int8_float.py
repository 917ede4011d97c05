"""Float evaluation of lowered int8 steps (numpy), for calibrating activation ranges.

Runs the steps of :func:`subnets.export.int8.lower` on a level's (sliced) variables in float64,
keeping every value, so the quantiser sees each tensor's range as that level computes it.

Example:
    >>> import numpy as np
    >>> from subnets.export.int8_float import pad_hw
    >>> pad_hw(np.ones((1, 2, 2, 1)), ((1, 0), (0, 1))).shape
    (1, 3, 3, 1)

References:
    Jacob et al., CVPR 2018 (post-training range calibration).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from subnets.graph import get_path


def pad_hw(x: np.ndarray, pad: Any, value: float = 0.0) -> np.ndarray:
    """Pad the two spatial axes of an NHWC batch by ``((top, bottom), (left, right))``."""
    (t, b), (left, r) = pad
    return np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, step: Any, fill: float = 0.0):
    """Yield (ky, kx, strided input slice) for each window tap (NHWC, padded with ``fill``)."""
    xp = pad_hw(x, step.pad, fill)
    (oh, ow), (sh, sw) = step.out_hw, step.stride
    for ky in range(step.window[0]):
        for kx in range(step.window[1]):
            yield ky, kx, xp[:, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw, :]


def norm_affine(variables: dict, norm: Any, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode norm as ``y = x * gain + offset`` (length ``c``), from ``variables``."""
    def arr(path: Any, default: float) -> np.ndarray:
        if path is None:
            return np.full(c, default)
        return np.asarray(get_path(variables, path), np.float64).reshape(-1)[:c]

    gain = arr(norm.scale, 1.0) / np.sqrt(arr(norm.var, 1.0) + float(norm.epsilon))
    return gain, arr(norm.shift, 0.0) - arr(norm.mean, 0.0) * gain


def _gain(step: Any, variables: dict, c: int) -> tuple[np.ndarray, np.ndarray]:
    bias = np.zeros(c) if step.bias is None else np.asarray(
        get_path(variables, step.bias), np.float64).reshape(-1)[:c]
    if step.norm is None:
        return np.ones(c), bias
    gain, offset = norm_affine(variables, step.norm, c)
    return gain, bias * gain + offset


def _act(y: np.ndarray, act: str | None) -> np.ndarray:
    if act == "relu":
        return np.maximum(y, 0.0)
    if act == "relu6":
        return np.clip(y, 0.0, 6.0)
    return y


def run_float(steps: list, variables: dict, x: np.ndarray) -> dict[int, np.ndarray]:
    """Every value of the program on batch ``x`` (NHWC, or (N, C) for a dense input)."""
    x = np.asarray(x, np.float64)
    if x.ndim == 2:
        x = x[:, None, None, :]
    vals = {0: x}
    for s in steps:
        a = vals[s.src]
        if s.kind == "conv":
            k = np.asarray(get_path(variables, s.kernel), np.float64)
            if k.ndim == 2:
                a = a.reshape(a.shape[0], s.window[0], s.window[1], -1)
                k = k.reshape(s.window[0], s.window[1], a.shape[-1], k.shape[-1])
            a = a[..., :k.shape[2]]
            y = sum(w @ k[ky, kx] for ky, kx, w in _windows(a, s))
            gain, shift = _gain(s, variables, k.shape[-1])
            y = _act(y * gain + shift, s.act)
        elif s.affine:
            gain, shift = _gain(s, variables, a.shape[-1])
            y = _act(a * gain + shift, s.act)
        elif s.kind == "depthwise":
            k = np.asarray(get_path(variables, s.kernel), np.float64)
            k = k.reshape(k.shape[0], k.shape[1], -1)
            y = sum(w * k[ky, kx] for ky, kx, w in _windows(a, s))
            gain, shift = _gain(s, variables, k.shape[-1])
            y = _act(y * gain + shift, s.act)
        elif s.kind == "maxpool":
            y = np.max(np.stack([w for _, _, w in _windows(a, s, -np.inf)]), axis=0)
        elif s.kind == "avgpool":
            ones = np.ones(a.shape[:3] + (1,))
            total = sum(w for _, _, w in _windows(a, s))
            count = sum(w for _, _, w in _windows(ones, s))
            y = total / count
        else:
            y = _act(a + vals[s.src2], s.act)
        vals[s.dst] = y
    return vals
