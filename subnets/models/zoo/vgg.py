"""CIFAR-style VGG-16 (13 conv layers with norm, global average pool, one linear classifier).

This is the OpenLTH ``cifar_vgg_16`` layout DNNShifter prunes. Max pools use SAME padding so
28x28 inputs (Fashion-MNIST) also reach a 1x1 map after five pools.

Example: 14.7M parameters, as DNNShifter reports for CIFAR-10.
    >>> import subnets
    >>> net = subnets.zoo.create("vgg16", num_classes=10, input_shape=(32, 32, 3))
    >>> round(subnets.cost.params(net) / 1e6, 1)
    14.7

References:
    Eccles et al., DNNShifter (2023); Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019);
    Simonyan & Zisserman, VGG (ICLR 2015).
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax.numpy as jnp

from subnets.models.zoo.common import Net, check_norm, lazy_graph, norm_layer, width_items

VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M")


@dataclass(frozen=True)
class VGGConfig:
    plan: tuple = VGG16_PLAN


class VGG(nn.Module):
    cfg: VGGConfig
    widths: tuple
    num_classes: int
    norm: str

    @nn.compact
    def __call__(self, x, train: bool = False):
        w = dict(self.widths)
        h, i = x, 0
        for item in self.cfg.plan:
            if item == "M":
                h = nn.max_pool(h, (2, 2), (2, 2), padding="SAME")
                continue
            h = nn.Conv(w[f"v{i}"], (3, 3), padding="SAME", name=f"conv{i}")(h)
            h = nn.relu(norm_layer(self.norm, f"norm{i}", w[f"v{i}"], train)(h))
            i += 1
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier")(h)


def make_vgg(name: str, cfg: VGGConfig, num_classes: int, input_shape, norm: str) -> Net:
    norm = check_norm(norm)
    sizes = [item for item in cfg.plan if item != "M"]
    widths = {f"v{i}": size for i, size in enumerate(sizes)}
    module = VGG(cfg, width_items(widths), num_classes, norm)
    graph = lazy_graph((name, cfg, num_classes, tuple(input_shape), norm), module,
                       input_shape, {f"conv{i}": f"v{i}" for i in range(len(sizes))})
    return Net(name, graph, tuple(input_shape), num_classes, norm,
               lambda w, **_: VGG(cfg, width_items(w), num_classes, norm))
