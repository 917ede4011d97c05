"""Own (non-zoo) Linen and NNX models through the whole package with no hand-written graph:
trace, costs, slicing, families, dead-structure removal, IMP and storage."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _own_models import batch, chain_mlp, dw_cnn, randomize, res_mlp

import subnets
from subnets import cost, io
from subnets.nested.pipeline import build_family
from subnets.runtime import Family, Portfolio

MODELS = {"chain_mlp": chain_mlp, "res_mlp": res_mlp, "dw_cnn": dw_cnn}


def _setup(name):
    model = MODELS[name]()
    return model, randomize(model.init(jax.random.key(0))), batch(model)


def _close(a, b, tol=1e-4):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())))


def _half(model):
    return {g.name: max(1, g.size // 2) for g in model.graph.free}


@pytest.mark.parametrize("name", MODELS)
def test_adapter_is_a_model_with_a_traced_graph(name):
    model, v, x = _setup(name)
    assert isinstance(model, subnets.models.Model)
    model.graph.validate(v)
    assert model.graph["out"].fixed and model.graph["out"].size == model.apply(v, x).shape[-1]
    _close(subnets.graph.run(model.graph, v, x), model.apply(v, x))


def test_residual_add_joins_one_group():
    model = res_mlp()
    stream = [g for g in model.graph.free if g.size == 32]
    assert len(stream) == 1  # inp's and block's outputs are ONE group
    producers = {lay.path[1] for lay in model.graph.producers(stream[0].name)}
    assert producers == {"inp", "block"}


def test_macs_of_own_models_count_every_layer():
    # ResMLP: 10*32 + 32*32 + 32*24 + 24*4 (a missing layer would read lower).
    assert cost.macs(res_mlp()) == 10 * 32 + 32 * 32 + 32 * 24 + 24 * 4
    # DWCNN at 12x8: stride-2 SAME conv -> 6x4 positions; depthwise 3x3; pointwise; dense.
    pos = 6 * 4
    assert cost.macs(dw_cnn()) == pos * 9 * 1 * 8 + pos * 9 * 8 + pos * 8 * 12 + 12 * 5
    half = _half(dw_cnn())
    assert cost.macs(dw_cnn(), half) < cost.macs(dw_cnn())


@pytest.mark.parametrize("name", MODELS)
def test_slice_equals_mask(name):
    model, v, x = _setup(name)
    widths = _half(model)
    sliced = subnets.slice_widths(model.graph, v, widths)
    masked = subnets.width_mask(model.graph, v, widths)
    _close(jax.jit(model.apply)(sliced, x), jax.jit(model.apply)(masked, x))


@pytest.mark.parametrize("name", MODELS)
def test_permutation_keeps_function(name):
    model, v, x = _setup(name)
    rng = np.random.default_rng(3)
    perm = {g.name: rng.permutation(g.size) for g in model.graph.free}
    _close(model.apply(subnets.permute(model.graph, v, perm), x), model.apply(v, x))


@pytest.mark.parametrize("name", MODELS)
def test_train_mode_returns_updated_statistics(name):
    model, v, x = _setup(name)
    logits, stats = model.apply(v, x, train=True, mutable=True)
    assert logits.shape == (len(x), model.graph["out"].size)
    if "batch_stats" in v:
        assert jax.tree.structure(stats) == jax.tree.structure(v["batch_stats"])
        assert any(not np.allclose(a, b) for a, b in zip(
            jax.tree.leaves(stats), jax.tree.leaves(v["batch_stats"]), strict=True))


@pytest.mark.parametrize("name", ["chain_mlp", "dw_cnn"])
def test_select_widths_and_build_family_on_chains(name):
    model, v, x = _setup(name)
    scores = subnets.importance.l1(model.graph, v)
    fam = build_family(model, v, scores, [0.3, 0.6], min_units=1)
    full = cost.macs(model)
    for lv, b in zip(fam.levels[:-1], (0.3, 0.6), strict=True):
        assert cost.macs(model, lv) <= b * full
    assert fam.levels[-1] == model.graph.full_widths()
    _close(fam.apply(x, len(fam) - 1), model.apply(v, x))  # permuting keeps the function
    for i, lv in enumerate(fam.levels):
        masked = subnets.width_mask(fam.level_variables(len(fam) - 1), model.graph, lv)
        _close(fam.apply(x, i), model.apply(masked, x))


def test_build_family_with_explicit_levels_on_the_residual_model():
    model, v, x = _setup("res_mlp")
    scores = subnets.importance.l1(model.graph, v)
    levels = [{g.name: max(1, g.size // 4) for g in model.graph.free}, _half(model)]
    fam = build_family(model, v, scores, [0.25, 0.5], levels=levels)
    assert len(fam) == 3
    for i, lv in enumerate(fam.levels):
        masked = subnets.width_mask(model.graph, fam.variables, lv)
        _close(fam.apply(x, i), model.apply(masked, x))


@pytest.mark.parametrize("name", MODELS)
def test_remove_dead_is_exact(name):
    model, v, x = _setup(name)
    grp = max(model.graph.free, key=lambda g: g.size)
    producer = model.graph.producers(grp.name)[0]
    kernel = np.array(subnets.graph.get_path(v, producer.path))
    kernel[..., :3] = 0.0  # three output channels without incoming weights
    others = model.graph.producers(grp.name)[1:]
    updates = {producer.path: kernel}
    for lay in others:
        k = np.array(subnets.graph.get_path(v, lay.path))
        k[..., :3] = 0.0
        updates[lay.path] = k
    sparse = subnets.graph.set_paths(v, updates)
    small, widths = subnets.remove_dead(sparse, model)
    assert widths[grp.name] < grp.size
    _close(model.apply(small, x), model.apply(sparse, x))


@pytest.mark.parametrize("name", ["res_mlp", "dw_cnn"])
def test_one_imp_round(name):
    from subnets.pruning import imp, make_train_fn

    model, v, x = _setup(name)
    xs = batch(model, n=32, seed=5)
    ys = (xs.reshape(32, -1)[:, 0] > 0).astype(np.int32)
    fn = make_train_fn(model, xs, ys, epochs=1, batch_size=16, progress=False)
    levels = imp(model, v, train_fn=fn, levels=1, key=jax.random.key(1))
    assert [round(lv.density, 2) for lv in levels] == [1.0, 0.8]
    for path, m in levels[1].masks.items():
        w = np.asarray(subnets.graph.get_path(levels[1].variables, path))
        assert np.all(w[~np.asarray(m)] == 0)


@pytest.mark.parametrize("name", MODELS)
def test_family_save_load_needs_no_model(name, tmp_path):
    model, v, x = _setup(name)
    fam = Family(model, v, [_half(model), {}])
    path = tmp_path / "fam.subnets"
    fam.save(path)
    back = Family.load(path)
    assert back.levels == fam.levels
    assert back.net.graph == model.graph
    for i in range(len(fam)):
        _close(back.apply(x, i), fam.apply(x, i))


@pytest.mark.parametrize("name", MODELS)
def test_portfolio_save_load_needs_no_model(name, tmp_path):
    model, v, x = _setup(name)
    p = Portfolio(model=model)
    p.add("full", v)
    p.add("half", subnets.slice_widths(model.graph, v, _half(model)))
    path = tmp_path / "p.subnets"
    p.save(path)
    back = Portfolio.load(path)
    for variant in ("full", "half"):
        _close(back.apply(x, variant), p.apply(x, variant))


def test_version_1_family_file_still_loads(tmp_path):
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    v = randomize(net.init(jax.random.key(0)))
    levels = [{"h0": 8, "h1": 8, "h2": 8}, net.graph.full_widths()]
    meta = {"format": "subnets.family", "version": 1, "model": "dnn-s", "num_classes": 3,
            "input_shape": [8], "norm": "none", "levels": levels, "level_stats": False}
    path = tmp_path / "old.subnets"
    io.save(path, {"variables": v, "level_batch_stats": {}}, meta=meta)
    back = Family.load(path)
    x = np.ones((2, 8), np.float32)
    _close(back.apply(x, 0), Family(net, v, levels).apply(x, 0))


def test_family_load_rejects_a_broken_graph(tmp_path):
    model, v, _ = _setup("chain_mlp")
    fam = Family(model, v, [{}])
    meta = fam.meta()
    meta["graph"] = {"groups": "nonsense"}
    path = tmp_path / "bad.subnets"
    io.save(path, {"variables": fam.variables, "level_batch_stats": {}}, meta=meta)
    with pytest.raises(io.FormatError, match="bad.subnets"):
        Family.load(path)


def test_bad_models_are_named():
    import flax.linen as nn

    with pytest.raises(TypeError, match="from_linen"):
        subnets.models.from_linen(object(), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="example_x"):
        subnets.models.from_linen(nn.Dense(3), np.zeros(3))
    from subnets.models.protocol import check_model

    with pytest.raises(TypeError, match="from_linen"):
        check_model(nn.Dense(3))
