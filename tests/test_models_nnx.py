"""from_nnx specifics: the plain-dict layout, sliced arrays through the module's own code,
train-mode statistics as Linen's ``mutable`` returns them."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _own_models import batch, dw_cnn, randomize
from flax import nnx

import subnets


class ListMLP(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(5, 12, rngs=rngs), nnx.Linear(12, 9, rngs=rngs)])
        self.bn = nnx.BatchNorm(9, rngs=rngs)
        self.head = nnx.Linear(9, 3, rngs=rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = nnx.relu(layer(x))
        return self.head(self.bn(x))


def _list_mlp():
    return subnets.models.from_nnx(ListMLP(nnx.Rngs(0)), np.zeros((2, 5), np.float32))


def test_layout_is_two_plain_collections_with_string_keys():
    model = _list_mlp()
    v = model.init(jax.random.key(0))
    assert sorted(v) == ["batch_stats", "params"]
    assert sorted(v["params"]["layers"]) == ["0", "1"]
    assert sorted(v["batch_stats"]["bn"]) == ["mean", "var"]
    assert all(isinstance(a, jax.Array) for a in jax.tree.leaves(v))
    v["params"]["head"]["bias"] = v["params"]["head"]["bias"] + 1.0
    assert not np.allclose(model.init(jax.random.key(0))["params"]["head"]["bias"],
                           v["params"]["head"]["bias"])  # init hands out a copy


def test_sliced_arrays_run_through_the_module_and_match_the_program():
    model = _list_mlp()
    v = randomize(model.init(jax.random.key(0)))
    x = batch(model)
    widths = {g.name: max(1, g.size // 3) for g in model.graph.free}
    small = subnets.slice_widths(model.graph, v, widths)
    got = model.apply(small, x)  # the NNX module itself, on smaller arrays
    ref = subnets.graph.run(model.graph, small, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_depthwise_model_slices_through_the_program():
    model = dw_cnn()
    v = randomize(model.init(jax.random.key(0)))
    x = batch(model)
    widths = {g.name: 3 for g in model.graph.free}
    small = subnets.slice_widths(model.graph, v, widths)
    masked = subnets.width_mask(model.graph, v, widths)
    np.testing.assert_allclose(np.asarray(model.apply(small, x)),
                               np.asarray(model.apply(masked, x)), rtol=1e-4, atol=1e-4)


def test_train_mode_matches_batch_statistics():
    model = _list_mlp()
    v = randomize(model.init(jax.random.key(0)))
    x = batch(model, n=16)
    _, stats = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=True))(v, x)
    h = x
    for name in ("0", "1"):
        p = v["params"]["layers"][name]
        h = np.maximum(h @ p["kernel"] + p["bias"], 0)
    momentum = 0.99  # nnx.BatchNorm's default
    expect = momentum * v["batch_stats"]["bn"]["mean"] + (1 - momentum) * h.mean(0)
    np.testing.assert_allclose(stats["bn"]["mean"], expect, rtol=1e-4, atol=1e-5)
    logits_eval = model.apply(v, x)
    logits_train = model.apply(v, x, train=True)
    assert not np.allclose(logits_eval, logits_train)


def test_non_nnx_input_is_refused():
    with pytest.raises(TypeError, match="flax.nnx.Module"):
        subnets.models.from_nnx(object(), np.zeros((1, 3)))


def test_train_mode_never_writes_into_the_callers_arrays():
    model = _list_mlp()
    v = jax.tree.map(np.asarray, randomize(model.init(jax.random.key(0))))
    before = np.array(v["batch_stats"]["bn"]["mean"])
    _, stats = model.apply(v, batch(model, n=8), train=True, mutable=True)
    np.testing.assert_array_equal(v["batch_stats"]["bn"]["mean"], before)
    assert not np.allclose(stats["bn"]["mean"], before)
