"""The collapse guard: every criterion's masks keep each layer's floor; warnings name layers."""

import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import subnets
from subnets.graph import get_path
from subnets.pruning.imp import magnitude_prune
from subnets.pruning.pai import METHODS, pai_masks, prune_at_init
from subnets.pruning.reconvene import default_prunable, reconvene
from subnets.pruning.scoring import DEFAULT_FLOOR, CollapseWarning, Floor, keep_masks


@pytest.fixture(scope="module")
def dnn():
    net = subnets.zoo.create("dnn-s", num_classes=4)
    v = net.init(jax.random.key(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (16, 250)))
    return net, v, x, np.arange(16) % 4


@settings(max_examples=40, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 30), st.integers(1, 12)), min_size=1,
                       max_size=4),
       density=st.floats(0.01, 1.0), seed=st.integers(0, 2**16),
       floor=st.builds(Floor, st.integers(0, 5), st.floats(0.0, 1.0)))
def test_keep_masks_is_exact_and_keeps_every_floor(shapes, density, seed, floor):
    rng = np.random.default_rng(seed)
    # Layers at very different scales: a pure global ranking would empty the small ones.
    s = {(f"l{i}",): rng.normal(size=sh) * 10.0 ** rng.integers(-3, 3)
         for i, sh in enumerate(shapes)}
    total = sum(math.prod(sh) for sh in shapes)
    k = max(1, round(density * total))
    m = keep_masks(s, k, floor=floor, warn=False)
    assert sum(int(a.sum()) for a in m.values()) == k
    floors = {p: floor.count(a.shape, k / total) for p, a in s.items()}
    if sum(floors.values()) <= k:
        for p, a in m.items():
            assert a.shape == s[p].shape and int(a.sum()) >= floors[p], p
    for p, a in m.items():  # within a layer, everything kept outranks everything dropped
        if a.any() and (~a).any():
            assert s[p][a].min() >= s[p][~a].max()


def test_pruned_weights_are_never_revived_to_meet_a_floor():
    s = {("a",): np.array([-np.inf, -np.inf, 1.0, 2.0]), ("b",): np.arange(10.0, 20.0)}
    m = keep_masks(s, 8, floor=Floor(min_units=3, min_ratio=1.0), warn=False)
    assert not m[("a",)][:2].any() and m[("a",)][2:].all()
    assert sum(int(a.sum()) for a in m.values()) == 8


@pytest.mark.parametrize("method", METHODS)
def test_floor_holds_for_every_pai_criterion(dnn, method):
    net, v, x, y = dnn
    density = 0.05  # the floors (4 units of every layer) fit in the budget
    kw = dict(density=density, method=method, key=jax.random.key(2),
              prunable=default_prunable(net), rounds=5 if method == "synflow" else None)
    m = prune_at_init(net, v, x, y, **kw)
    total = sum(a.size for a in m.values())
    assert sum(int(a.sum()) for a in m.values()) == round(density * total)
    for p, a in m.items():
        assert int(a.sum()) >= DEFAULT_FLOOR.count(a.shape, density), (method, p)
        assert int(a.sum()) >= DEFAULT_FLOOR.min_units * a.shape[0]  # 4 units' worth


def test_floor_holds_for_imp_rounds():
    rng = np.random.default_rng(0)
    v = {"params": {"a": {"kernel": rng.normal(size=(50, 20)) * 1e-3},
                    "b": {"kernel": rng.normal(size=(20, 20))}}}
    masks = {("params", k, "kernel"): np.ones(np.shape(get_path(v, ("params", k, "kernel"))),
                                              bool) for k in "ab"}
    for _ in range(2):
        masks = magnitude_prune(v, masks, 0.5)
    a = np.asarray(masks[("params", "a", "kernel")])
    assert int(a.sum()) >= DEFAULT_FLOOR.min_units * 50  # magnitude alone would empty it
    with pytest.warns(CollapseWarning, match="layer params/a/kernel keeps 0 of 1000"):
        bare = {p: np.ones(np.shape(m), bool) for p, m in masks.items()}
        for _ in range(2):
            bare = magnitude_prune(v, bare, 0.5, floor=None)


def test_reconvene_guard_prevents_one_unit_layers_and_unguarded_warns(dnn):
    net, v, x, y = dnn
    r = reconvene(net, v, x, y, density=0.05, method="magnitude", key=jax.random.key(1))
    assert min(r.widths.values()) >= DEFAULT_FLOOR.min_units
    with pytest.warns(CollapseWarning, match="params/dense0/kernel"):
        bare = reconvene(net, v, x, y, density=0.05, method="magnitude",
                         key=jax.random.key(1), floor=None)
    assert min(bare.widths.values()) < DEFAULT_FLOOR.min_units  # the collapse the floor stops


def test_pai_masks_warning_names_the_layer():
    s = {("small",): np.full((10, 4), 1e-3), ("big",): np.ones((10, 40))}
    with pytest.warns(CollapseWarning, match="layer small keeps 0 of 40"):
        pai_masks(s, 0.2, floor=None)
    m = pai_masks(s, 0.2)  # guarded: 4 units x 10 inputs, no warning raised as error
    assert int(m[("small",)].sum()) >= 40 * 0.25 * 0.2 and int(m[("small",)].sum()) > 0


def test_bad_floor_and_scope_are_named():
    with pytest.raises(ValueError, match="min_ratio"):
        Floor(min_ratio=2.0)
    with pytest.raises(ValueError, match="scope"):
        keep_masks({("a",): np.ones(3)}, 1, scope="net")
    with pytest.raises(ValueError, match="a contain NaN"):
        keep_masks({("a",): np.array([np.nan, 1.0])}, 1)


def test_floor_reads_the_output_axis_from_the_graph():
    # A kernel laid out [out, in] (2 units of 50 weights): one unit is 50 weights, not 2.
    from subnets.graph import ChannelGraph, Group, Member
    from subnets.pruning.scoring import out_axes

    g = ChannelGraph((Group("h", 2, (Member(("k",), 0, role="out"),)),
                      Group("i", 50, (Member(("k",), 1, role="in"),))))
    axes = out_axes(g, [("k",), ("other",)])
    assert axes == {("k",): 0}
    s = {("k",): np.arange(100.0).reshape(2, 50), ("other",): 1e3 + np.arange(100.0)}
    floor = Floor(min_units=1, min_ratio=0.0)
    assert floor.count((2, 50), 0.1, 0) == 50 and floor.count((2, 50), 0.1) == 2
    m = keep_masks(s, 60, floor=floor, warn=False, axes=axes)
    assert int(m[("k",)].sum()) == 50 and int(m[("other",)].sum()) == 10
    m = keep_masks(s, 60, floor=floor, warn=False)
    assert int(m[("k",)].sum()) == 2
