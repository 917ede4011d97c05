"""Tests for subnets.runtime.family: levels are the masked full model, switching swaps the
compiled executable, storage round-trips through the safe format."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

import subnets
from subnets import io
from subnets.runtime.family import Family

LEVELS = [{"g0": 8, "g1": 8, "g2": 16, "g3": 16, "g4": 16},
          {"g0": 16, "g1": 24, "g2": 24, "g3": 32, "g4": 32},
          {}]


def _random_variables(net, seed=0):
    shapes = jax.eval_shape(net.init, jax.random.key(0))
    rng = np.random.default_rng(seed)

    def fill(path, s):
        a = rng.normal(scale=0.3, size=s.shape).astype(np.float32)
        return np.abs(a) + 0.5 if path[-1].key == "var" else a

    return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.cache
def _setup():
    net = subnets.zoo.create("ds-cnn-s", num_classes=5, input_shape=(12, 8, 1))
    v = _random_variables(net)
    stats = [_random_variables(net, seed=10 + i)["batch_stats"] for i in range(len(LEVELS))]
    fam = Family(net, v, LEVELS, level_batch_stats=stats, batch_shape=(4, 12, 8, 1))
    x = np.random.default_rng(5).normal(size=(4, 12, 8, 1)).astype(np.float32)
    return net, v, stats, fam, x


def test_levels_equal_masked_full_model():
    net, v, stats, fam, x = _setup()
    masked_apply = jax.jit(lambda w, vv, xx: net.apply(subnets.width_mask(net.graph, vv, w), xx))
    outs = []
    for i, level in enumerate(fam.levels):
        full = {**v, "batch_stats": stats[i]}
        expect = masked_apply({g: np.int32(k) for g, k in level.items()}, full, x)
        got = fam.apply(x, i)
        np.testing.assert_allclose(np.asarray(got), np.asarray(expect), rtol=1e-4, atol=1e-5)
        outs.append(np.asarray(got))
    assert not np.allclose(outs[0], outs[-1])


def test_level_variables_are_prefixes():
    net, v, stats, fam, _ = _setup()
    small = fam.level_variables(0)
    k = small["params"]["pw1"]["kernel"]
    assert k.shape == (1, 1, 8, 16)
    np.testing.assert_array_equal(k, v["params"]["pw1"]["kernel"][:, :, :8, :16])
    np.testing.assert_array_equal(small["batch_stats"]["pw1_norm"]["mean"],
                                  stats[0]["pw1_norm"]["mean"][:16])
    assert fam.levels[-1] == net.graph.full_widths()


def test_switch_changes_executable():
    _, _, _, fam, x = _setup()
    exes = [fam.executable(i, x.shape) for i in range(len(fam))]
    assert len({id(e) for e in exes}) == len(fam)
    for i in (2, 0, 1):
        fam.switch(i)
        assert fam.level == i
        np.testing.assert_array_equal(np.asarray(fam(x)), np.asarray(fam.apply(x, i)))
    assert fam.executable(1, x.shape) is exes[1]  # no recompilation


def test_save_load_round_trip(tmp_path):
    net, v, _, fam, x = _setup()
    path = tmp_path / "fam.subnets"
    fam.save(path, meta={"note": "test"})
    back = Family.load(path)
    assert back.levels == fam.levels
    assert back.net.name == net.name and back.net.input_shape == net.input_shape
    for a, b in zip(jax.tree.leaves(back.variables), jax.tree.leaves(fam.variables), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # No model given: the stored graph's program runs (same function, other op order).
    for i in range(len(fam)):
        np.testing.assert_allclose(np.asarray(back.apply(x, i)), np.asarray(fam.apply(x, i)),
                                   rtol=1e-5, atol=1e-6)
    assert io.load(path)[1]["extra"] == {"note": "test"}
    assert "model" not in io.load(path)[1] and "graph" in io.load(path)[1]
    # With the model given, its own apply runs: bit-identical.
    same = Family.load(path, model=net)
    for i in range(len(fam)):
        np.testing.assert_array_equal(np.asarray(same.apply(x, i)), np.asarray(fam.apply(x, i)))


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.subnets"
    io.save(path, {"w": np.zeros(3, np.float32)}, meta={"format": "portfolio"})
    with pytest.raises(io.FormatError, match="not a subnets family"):
        Family.load(path)


def test_memory_shared_below_separate_copies():
    _, _, _, fam, _ = _setup()
    assert fam.memory_bytes() < fam.separate_bytes()
    full = sum(np.asarray(a).nbytes for a in jax.tree.leaves(fam.variables))
    assert fam.memory_bytes() >= full


def test_not_nested_is_refused():
    net, v, _, _, _ = _setup()
    with pytest.raises(ValueError, match="group 'g1' has width 24 at level 0 but 8"):
        Family(net, v, [{"g1": 24}, {"g1": 8}])
    with pytest.raises(ValueError, match="level 0"):
        Family(net, v, [{"g1": 999}])
    with pytest.raises(IndexError):
        Family(net, v, [{}]).level_variables(3)
