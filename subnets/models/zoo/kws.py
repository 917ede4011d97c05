"""The Hello-Edge keyword-spotting models (DNN, CNN, DS-CNN in S/M/L) and the vision DS-CNN.

Layouts follow ARM's ML-KWS-for-MCU models as REDS uses them: DNN input 250 features (25x10
MFCC, flattened), CNN/DS-CNN input 49x10x1.

Example:
    >>> import subnets
    >>> net = subnets.zoo.create("ds-cnn-s", num_classes=12)
    >>> net.input_shape, subnets.cost.params(net)
    ((49, 10, 1), 23756)

References:
    Zhang et al., Hello Edge: Keyword Spotting on Microcontrollers (arXiv:1711.07128);
    Corti et al., REDS (arXiv:2311.13349), Sec. 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from subnets import ops
from subnets.models.zoo.common import (
    Net,
    check_norm,
    conv_out_size,
    lazy_graph,
    norm_layer,
    width_items,
)


# ----------------------------------------------------------------------------- DNN
@dataclass(frozen=True)
class DNNConfig:
    hidden: tuple[int, ...]


class DNN(nn.Module):
    cfg: DNNConfig
    widths: tuple
    num_classes: int
    norm: str

    @nn.compact
    def __call__(self, x, train: bool = False):
        w = dict(self.widths)
        h = x.reshape((x.shape[0], -1))
        for i in range(len(self.cfg.hidden)):
            h = nn.Dense(w[f"h{i}"], name=f"dense{i}")(h)
            h = norm_layer(self.norm, f"norm{i}", w[f"h{i}"], train)(h)
            h = nn.relu(h)
        return nn.Dense(self.num_classes, name=f"dense{len(self.cfg.hidden)}")(h)


def make_dnn(name: str, cfg: DNNConfig, num_classes: int, input_shape, norm: str) -> Net:
    norm = check_norm(norm)
    if norm in ("group", "instance"):
        raise ValueError(f"{name}: norm={norm!r} needs spatial maps; use 'batch' or 'none'")
    widths = {f"h{i}": size for i, size in enumerate(cfg.hidden)}
    module = DNN(cfg, width_items(widths), num_classes, norm)
    graph = lazy_graph((name, cfg, num_classes, tuple(input_shape), norm), module,
                       input_shape, {f"dense{i}": f"h{i}" for i in range(len(cfg.hidden))})
    return Net(name, graph, tuple(input_shape), num_classes, norm,
               lambda w, **_: DNN(cfg, width_items(w), num_classes, norm))


# ----------------------------------------------------------------------------- CNN
@dataclass(frozen=True)
class CNNConfig:
    filters: tuple[int, int]
    linear: int
    dense: int = 128
    kernel: tuple[int, int] = (10, 4)
    strides: tuple[tuple[int, int], tuple[int, int]] = ((1, 1), (2, 1))


class CNN(nn.Module):
    cfg: CNNConfig
    widths: tuple
    num_classes: int
    norm: str

    @nn.compact
    def __call__(self, x, train: bool = False):
        w = dict(self.widths)
        h = x
        for i in range(2):
            h = nn.Conv(w[f"c{i}"], self.cfg.kernel, self.cfg.strides[i], padding="VALID",
                        name=f"conv{i}")(h)
            h = nn.relu(norm_layer(self.norm, f"norm{i}", w[f"c{i}"], train)(h))
        h = h.reshape((h.shape[0], -1))
        h = nn.Dense(w["lin"], name="linear")(h)
        h = nn.Dense(w["fc"], name="dense")(h)
        dense_norm = "batch" if self.norm == "batch" else "none"
        h = nn.relu(norm_layer(dense_norm, "norm_dense", w["fc"], train)(h))
        return nn.Dense(self.num_classes, name="classifier")(h)


def make_cnn(name: str, cfg: CNNConfig, num_classes: int, input_shape, norm: str) -> Net:
    norm = check_norm(norm)
    hh, ww, _ = input_shape
    for i in range(2):
        hh = conv_out_size(hh, cfg.kernel[0], cfg.strides[i][0], "VALID")
        ww = conv_out_size(ww, cfg.kernel[1], cfg.strides[i][1], "VALID")
        if hh < 1 or ww < 1:
            raise ValueError(f"{name}: input {input_shape} too small for conv{i}")
    widths = {"c0": cfg.filters[0], "c1": cfg.filters[1], "lin": cfg.linear, "fc": cfg.dense}
    module = CNN(cfg, width_items(widths), num_classes, norm)
    graph = lazy_graph((name, cfg, num_classes, tuple(input_shape), norm), module,
                       input_shape, {"conv0": "c0", "conv1": "c1", "linear": "lin",
                                     "dense": "fc"})
    return Net(name, graph, tuple(input_shape), num_classes, norm,
               lambda w, **_: CNN(cfg, width_items(w), num_classes, norm))


# ----------------------------------------------------------------------------- DS-CNN
@dataclass(frozen=True)
class DSCNNConfig:
    channels: int
    blocks: int
    stem_kernel: tuple[int, int] = (10, 4)
    stem_stride: tuple[int, int] = (2, 2)
    first_dw_stride: tuple[int, int] = (1, 1)


class DepthwiseConv(nn.Module):
    """3x3 depthwise conv, SAME padding; kernel ``(3, 3, 1, C)`` exactly as ``nn.Conv`` has it.

    ``impl="shifts"`` sums nine shifted, scaled copies of the input: XLA's CPU backend runs
    grouped convolutions several times slower than these elementwise ops (measured 4x on a
    training step). ``impl="conv"`` emits one grouped convolution, which TFLite converts to a
    single DEPTHWISE_CONV_2D: use it for export. Both compute the same function.
    """

    features: int
    strides: tuple[int, int]
    impl: str = "shifts"

    @nn.compact
    def __call__(self, x):
        c = self.features
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, 1, c))
        bias = self.param("bias", nn.initializers.zeros_init(), (c,))
        if self.impl == "conv":
            y = jax.lax.conv_general_dilated(
                x, kernel.astype(x.dtype), self.strides, "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
            return y + bias
        (sh, sw), (hh, ww) = self.strides, x.shape[1:3]
        ho, wo = -(-hh // sh), -(-ww // sw)
        pad_h, pad_w = max((ho - 1) * sh + 3 - hh, 0), max((wo - 1) * sw + 3 - ww, 0)
        xp = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                         (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
        y = bias
        for i in range(3):
            for j in range(3):
                tap = xp[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]
                y = y + tap * kernel[i, j, 0]
        return y


class DSCNN(nn.Module):
    cfg: DSCNNConfig
    widths: tuple
    num_classes: int
    norm: str
    depthwise: str = "shifts"

    @nn.compact
    def __call__(self, x, train: bool = False):
        w = dict(self.widths)
        cfg = self.cfg
        h = nn.Conv(w["g0"], cfg.stem_kernel, cfg.stem_stride, padding="SAME", name="stem")(x)
        h = nn.relu(norm_layer(self.norm, "stem_norm", w["g0"], train)(h))
        for i in range(cfg.blocks):
            c = w[f"g{i}"]
            stride = cfg.first_dw_stride if i == 0 else (1, 1)
            h = DepthwiseConv(c, stride, self.depthwise, name=f"dw{i}")(h)
            h = nn.relu(norm_layer(self.norm, f"dw{i}_norm", c, train)(h))
            h = nn.Conv(w[f"g{i + 1}"], (1, 1), name=f"pw{i}", conv_general_dilated=ops.conv)(h)
            h = nn.relu(norm_layer(self.norm, f"pw{i}_norm", w[f"g{i + 1}"], train)(h))
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier")(h)


def make_dscnn(name: str, cfg: DSCNNConfig, num_classes: int, input_shape, norm: str) -> Net:
    norm = check_norm(norm)
    widths = {f"g{i}": cfg.channels for i in range(cfg.blocks + 1)}
    # Traced in its grouped-conv form: one conv_general_dilated per depthwise layer.
    module = DSCNN(cfg, width_items(widths), num_classes, norm, "conv")
    producers = {"stem": "g0", **{f"pw{i}": f"g{i + 1}" for i in range(cfg.blocks)}}
    graph = lazy_graph((name, cfg, num_classes, tuple(input_shape), norm), module,
                       input_shape, producers)
    return Net(name, graph, tuple(input_shape), num_classes, norm,
               lambda w, depthwise="shifts": DSCNN(cfg, width_items(w), num_classes, norm,
                                                   depthwise))
