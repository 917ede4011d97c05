"""A small Linen model outside the zoo, with its own leaf names ("w", "b"), for the tests that
check an algorithm reads the graph rather than Flax's or the zoo's naming."""

import flax.linen as nn
import numpy as np


class Affine(nn.Module):
    """``x @ w + b`` with parameters named "w" and "b"."""

    features: int

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        b = self.param("b", nn.initializers.normal(0.1), (self.features,))
        return x @ w + b


class MLP(nn.Module):
    """Affine -> BatchNorm -> relu, twice, then a Dense classifier."""

    hidden: tuple = (24, 16)
    classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, f in enumerate(self.hidden):
            x = Affine(f, name=f"fc_{i}")(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                     name=f"bn_{i}")(x))
        return nn.Dense(self.classes, name="head")(x)


def linen_mlp(inputs: int = 10):
    import subnets.models

    return subnets.models.from_linen(MLP(), np.zeros((1, inputs), np.float32))
