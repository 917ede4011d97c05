"""cPreResNet20: the pre-activation bottleneck ResNet that LCS uses on CIFAR-10.

Three stages of two bottleneck blocks (planes 16/32/64, expansion 4, strides 1/2/2); the first
block of each stage has a 1x1 projection shortcut applied to the block's raw input. Each
block's two inner widths are channel groups of their own; each stage's residual stream (the
projection's output, every block's last conv output, every block's pre-activation norm and first
conv input, up to the next stage's projection input) is ONE group.

Example: 33.7 MMACs at 32x32x3, as in the LCS paper.
    >>> import subnets
    >>> net = subnets.zoo.create("cpreresnet20", num_classes=10, input_shape=(32, 32, 3))
    >>> round(subnets.cost.macs(net) / 1e6, 1)
    33.7

References:
    Nunez et al., LCS (arXiv:2110.04252); He et al., Identity Mappings in Deep Residual Networks
    (ECCV 2016); Liu et al., Network Slimming (ICCV 2017), whose preresnet layout LCS reuses.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax.numpy as jnp

from subnets import ops
from subnets.models.zoo.common import Net, check_norm, lazy_graph, norm_layer, width_items


@dataclass(frozen=True)
class PreResNetConfig:
    stem: int = 16
    planes: tuple[int, ...] = (16, 32, 64)
    blocks: int = 2
    expansion: int = 4


def _block_name(s: int, b: int) -> str:
    return f"s{s}b{b}"


class PreResNet(nn.Module):
    cfg: PreResNetConfig
    widths: tuple
    num_classes: int
    norm: str

    @nn.compact
    def __call__(self, x, train: bool = False):
        w = dict(self.widths)
        cfg = self.cfg
        h = nn.Conv(w["stem"], (3, 3), padding="SAME", use_bias=False, name="stem",
                    conv_general_dilated=ops.conv)(x)
        stream = "stem"
        for s in range(len(cfg.planes)):
            for b in range(cfg.blocks):
                n = _block_name(s, b)
                stride = (2, 2) if (s > 0 and b == 0) else (1, 1)
                a = nn.relu(norm_layer(self.norm, f"{n}_norm1", w[stream], train)(h))
                a = nn.Conv(w[f"{n}a"], (1, 1), use_bias=False, name=f"{n}_conv1",
                            conv_general_dilated=ops.conv)(a)
                a = nn.relu(norm_layer(self.norm, f"{n}_norm2", w[f"{n}a"], train)(a))
                a = nn.Conv(w[f"{n}b"], (3, 3), stride, padding="SAME", use_bias=False,
                            name=f"{n}_conv2", conv_general_dilated=ops.conv)(a)
                a = nn.relu(norm_layer(self.norm, f"{n}_norm3", w[f"{n}b"], train)(a))
                a = nn.Conv(w[f"s{s}"], (1, 1), use_bias=False, name=f"{n}_conv3",
                            conv_general_dilated=ops.conv)(a)
                if b == 0:
                    h = nn.Conv(w[f"s{s}"], (1, 1), stride, use_bias=False,
                                name=f"{n}_down", conv_general_dilated=ops.conv)(h)
                h = a + h
                stream = f"s{s}"
        h = nn.relu(norm_layer(self.norm, "final_norm", w[stream], train)(h))
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier")(h)


def make_preresnet(name: str, cfg: PreResNetConfig, num_classes: int, input_shape,
                   norm: str) -> Net:
    norm = check_norm(norm)
    widths, producers = {"stem": cfg.stem}, {}
    for s, planes in enumerate(cfg.planes):
        widths[f"s{s}"] = planes * cfg.expansion
        for b in range(cfg.blocks):
            n = _block_name(s, b)
            widths[f"{n}a"] = widths[f"{n}b"] = planes
            producers.update({f"{n}_conv1": f"{n}a", f"{n}_conv2": f"{n}b"})
        # The stream's first producer: block 0's last conv runs before its projection.
        producers[f"{_block_name(s, 0)}_conv3"] = f"s{s}"
    module = PreResNet(cfg, width_items(widths), num_classes, norm)
    graph = lazy_graph((name, cfg, num_classes, tuple(input_shape), norm), module,
                       input_shape, producers)
    return Net(name, graph, tuple(input_shape), num_classes, norm,
               lambda w, **_: PreResNet(cfg, width_items(w), num_classes, norm))
