"""from_linen specifics: module.apply at full shape, the program on sliced arrays, train mode."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from _own_models import ChainMLP, batch, chain_mlp, randomize

import subnets


def test_full_variables_run_the_module_itself():
    model = chain_mlp()
    v = randomize(model.init(jax.random.key(0)))
    x = batch(model)
    direct = ChainMLP().apply(v, x, train=False)
    np.testing.assert_array_equal(np.asarray(model.apply(v, x)), np.asarray(direct))


def test_sliced_variables_run_where_flax_refuses_them():
    model = chain_mlp()
    v = randomize(model.init(jax.random.key(0)))
    x = batch(model)
    widths = {g.name: 5 for g in model.graph.free}
    small = subnets.slice_widths(model.graph, v, widths)
    try:
        ChainMLP().apply(small, x)
        refused = False
    except Exception:  # flax.errors.ScopeParamShapeError
        refused = True
    assert refused
    masked = subnets.width_mask(model.graph, v, widths)
    np.testing.assert_allclose(np.asarray(model.apply(small, x)),
                               np.asarray(model.apply(masked, x)), rtol=1e-4, atol=1e-4)


def test_train_keyword_is_detected_and_optional():
    assert chain_mlp().train_arg == "train"

    class NoTrain(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.relu(nn.Dense(4)(x)))

    model = subnets.models.from_linen(NoTrain(), np.zeros((1, 3), np.float32))
    assert model.train_arg is None
    v = model.init(jax.random.key(0))
    logits, stats = model.apply(v, np.ones((2, 3), np.float32), train=True, mutable=True)
    assert logits.shape == (2, 2) and stats == {}
