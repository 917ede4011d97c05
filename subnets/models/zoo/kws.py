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

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from subnets import ops
from subnets.models.zoo.common import (
    GraphBuilder,
    Net,
    check_norm,
    conv_out_size,
    in_member,
    lazy_graph,
    norm_layer,
    norm_members,
    out_members,
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
    features = math.prod(input_shape)
    b = GraphBuilder()
    prev = b.group("in", features, in_member("dense0", ndim=2), fixed=True)
    for i, size in enumerate(cfg.hidden):
        g = b.group(f"h{i}", size, *out_members(f"dense{i}", ndim=2),
                    *norm_members(norm, f"norm{i}"), in_member(f"dense{i + 1}", ndim=2))
        b.layer(f"dense{i}", "dense", prev, g)
        prev = g
    last = f"dense{len(cfg.hidden)}"
    b.group("out", num_classes, *out_members(last, ndim=2), fixed=True)
    b.layer(last, "dense", prev, "out")
    widths = {f"h{i}": size for i, size in enumerate(cfg.hidden)}
    module = DNN(cfg, width_items(widths), num_classes, norm)
    graph = lazy_graph((name, cfg, num_classes, tuple(input_shape), norm), module,
                       input_shape, {f"dense{i}": f"h{i}" for i in range(len(cfg.hidden))},
                       b.build())
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
    hh, ww, cin = input_shape
    b = GraphBuilder()
    prev = b.group("in", cin, in_member("conv0"), fixed=True)
    positions_in = hh * ww
    for i in range(2):
        hh = conv_out_size(hh, cfg.kernel[0], cfg.strides[i][0], "VALID")
        ww = conv_out_size(ww, cfg.kernel[1], cfg.strides[i][1], "VALID")
        if hh < 1 or ww < 1:
            raise ValueError(f"{name}: input {input_shape} too small for conv{i}")
        consumer = in_member("conv1") if i == 0 else in_member("linear", ndim=2, spatial=hh * ww)
        g = b.group(f"c{i}", cfg.filters[i], *out_members(f"conv{i}"),
                    *norm_members(norm, f"norm{i}"), consumer)
        b.layer(f"conv{i}", "conv", prev, g, positions=hh * ww,
                window=cfg.kernel[0] * cfg.kernel[1], in_positions=positions_in)
        prev, positions_in = g, hh * ww
    b.group("lin", cfg.linear, *out_members("linear", ndim=2), in_member("dense", ndim=2))
    b.layer("linear", "dense", "c1", "lin", window=hh * ww, in_positions=hh * ww)
    dense_norm = "batch" if norm == "batch" else "none"
    b.group("fc", cfg.dense, *out_members("dense", ndim=2),
            *norm_members(dense_norm, "norm_dense"), in_member("classifier", ndim=2))
    b.layer("dense", "dense", "lin", "fc")
    b.group("out", num_classes, *out_members("classifier", ndim=2), fixed=True)
    b.layer("classifier", "dense", "fc", "out")
    widths = {"c0": cfg.filters[0], "c1": cfg.filters[1], "lin": cfg.linear, "fc": cfg.dense}
    module = CNN(cfg, width_items(widths), num_classes, norm)
    graph = lazy_graph((name, cfg, num_classes, tuple(input_shape), norm), module,
                       input_shape, {"conv0": "c0", "conv1": "c1", "linear": "lin",
                                     "dense": "fc"}, b.build())
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
    hh, ww, cin = input_shape
    b = GraphBuilder()
    b.group("in", cin, in_member("stem"), fixed=True)
    pos_in = hh * ww
    hh = conv_out_size(hh, cfg.stem_kernel[0], cfg.stem_stride[0], "SAME")
    ww = conv_out_size(ww, cfg.stem_kernel[1], cfg.stem_stride[1], "SAME")
    b.group("g0", cfg.channels, *out_members("stem"), *norm_members(norm, "stem_norm"))
    b.layer("stem", "conv", "in", "g0", positions=hh * ww,
            window=cfg.stem_kernel[0] * cfg.stem_kernel[1], in_positions=pos_in)
    for i in range(cfg.blocks):
        g = f"g{i}"
        stride = cfg.first_dw_stride if i == 0 else (1, 1)
        pos_in = hh * ww
        hh = conv_out_size(hh, 3, stride[0], "SAME")
        ww = conv_out_size(ww, 3, stride[1], "SAME")
        # A depthwise conv's kernel is (3, 3, 1, C): its channel axis 3 follows its input group.
        b.add(g, *out_members(f"dw{i}"), *norm_members(norm, f"dw{i}_norm"), in_member(f"pw{i}"))
        b.layer(f"dw{i}", "depthwise", g, g, positions=hh * ww, window=9, in_positions=pos_in)
        nxt = b.group(f"g{i + 1}", cfg.channels, *out_members(f"pw{i}"),
                      *norm_members(norm, f"pw{i}_norm"))
        b.layer(f"pw{i}", "conv", g, nxt, positions=hh * ww, window=1, in_positions=hh * ww)
    last = f"g{cfg.blocks}"
    b.add(last, in_member("classifier", ndim=2))
    b.group("out", num_classes, *out_members("classifier", ndim=2), fixed=True)
    b.layer("classifier", "dense", last, "out")
    widths = {f"g{i}": cfg.channels for i in range(cfg.blocks + 1)}
    # Traced in its grouped-conv form: one conv_general_dilated per depthwise layer.
    module = DSCNN(cfg, width_items(widths), num_classes, norm, "conv")
    producers = {"stem": "g0", **{f"pw{i}": f"g{i + 1}" for i in range(cfg.blocks)}}
    graph = lazy_graph((name, cfg, num_classes, tuple(input_shape), norm), module,
                       input_shape, producers, b.build())
    return Net(name, graph, tuple(input_shape), num_classes, norm,
               lambda w, depthwise="shifts": DSCNN(cfg, width_items(w), num_classes, norm,
                                                   depthwise))
