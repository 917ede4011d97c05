"""Models that are NOT in the zoo, written as a user would, for the adapter tests."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np
from flax import nnx

import subnets

MLP_IN, CNN_IN = (10,), (12, 8, 1)


class ChainMLP(nn.Module):
    """A plain Linen MLP with BatchNorm (a chain: select_widths applies)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(24, name="d0")(x)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn0")(h))
        h = nn.relu(nn.Dense(16, name="d1")(h))
        return nn.Dense(4, name="head")(h)


class ResMLP(nn.Module):
    """A Linen MLP with a residual add: both hidden layers write one channel group."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(32, name="inp")(x))
        h = h + nn.relu(nn.Dense(32, name="block")(h))
        h = nn.relu(nn.Dense(24, name="mid")(h))
        return nn.Dense(4, name="head")(h)


class DWCNN(nnx.Module):
    """An NNX CNN: conv + BatchNorm, depthwise conv + BatchNorm, pointwise conv, pool, dense."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 8, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.dw = nnx.Conv(8, 8, (3, 3), feature_group_count=8, padding="SAME", rngs=rngs)
        self.dw_bn = nnx.BatchNorm(8, rngs=rngs)
        self.pw = nnx.Conv(8, 12, (1, 1), rngs=rngs)
        self.pw_bn = nnx.BatchNorm(12, rngs=rngs)
        self.fc = nnx.Linear(12, 5, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.bn(self.conv(x)))
        h = nnx.relu(self.dw_bn(self.dw(h)))
        h = nnx.relu(self.pw_bn(self.pw(h)))
        return self.fc(h.mean(axis=(1, 2)))


def randomize(variables, seed=0):
    """Random arrays everywhere (variances positive, BatchNorm scales near 1)."""
    rng = np.random.default_rng(seed)

    def fill(path, a):
        leaf = path[-1].key
        r = rng.normal(size=np.shape(a)).astype(np.float32)
        if leaf == "var":
            return np.abs(r) * 0.5 + 0.5
        if leaf == "scale":
            return 1.0 + 0.1 * r
        return 0.3 * r

    return jax.tree_util.tree_map_with_path(fill, variables)


@functools.cache
def chain_mlp():
    return subnets.models.from_linen(ChainMLP(), np.zeros((2,) + MLP_IN, np.float32))


@functools.cache
def res_mlp():
    return subnets.models.from_linen(ResMLP(), np.zeros((2,) + MLP_IN, np.float32))


@functools.cache
def dw_cnn():
    return subnets.models.from_nnx(DWCNN(nnx.Rngs(0)), np.zeros((2,) + CNN_IN, np.float32))


def batch(model, n=6, seed=1):
    return np.random.default_rng(seed).normal(size=(n,) + model.input_shape).astype(np.float32)
