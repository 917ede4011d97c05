"""build_family with fixed widths: the order ablation keeps the widths and follows the scores."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import subnets
from subnets import importance
from subnets.nested import pipeline
from subnets.transforms import permute


@pytest.fixture(scope="module")
def dnn():
    net = subnets.zoo.create("dnn-s", num_classes=4, input_shape=(12,))
    return net, net.init(jax.random.key(0))


def test_fixed_levels_keep_widths_and_follow_the_scores(dnn):
    net, v = dnn
    levels = [{"h0": 10, "h1": 5, "h2": 30}, {"h0": 40, "h1": 60, "h2": 30}]
    for scores in (importance.l1(net.graph, v), importance.random(net.graph,
                                                                  key=jax.random.key(3))):
        fam = pipeline.build_family(net, v, scores, [0.3, 0.6], levels=levels)
        full = net.graph.full_widths()
        assert fam.levels == [{**full, **lv} for lv in levels] + [full]
        # the permutation is the scores' own: the highest-scored units come first
        want = permute(net.graph, v, importance.permutation(scores))
        jax.tree.map(np.testing.assert_array_equal, fam.variables, want)
    # without fixed levels the knapsack decides, and the smallest level is within its budget
    solved = pipeline.build_family(net, v, importance.l1(net.graph, v), [0.3, 0.6])
    assert subnets.cost.macs(net, solved.levels[0]) <= 0.3 * subnets.cost.macs(net)


def test_fixed_levels_bad_input(dnn):
    net, v = dnn
    scores = importance.l1(net.graph, v)
    with pytest.raises(ValueError, match="3 width maps for 2 budgets"):
        pipeline.build_family(net, v, scores, [0.3, 0.6],
                              levels=[{"h0": 1}, {"h0": 2}, {"h0": 3}])
    with pytest.raises(ValueError, match="h1"):
        pipeline.build_family(net, v, scores, [0.3, 0.6],
                              levels=[{"h1": 50}, {"h1": 20}])
