import numpy as np
import pytest

import subnets
from subnets.graph import ChannelGraph, Group, Member, get_path, set_paths


def _dnn_vars(hidden=8):
    return {"params": {"d0": {"kernel": np.zeros((4, hidden)), "bias": np.zeros(hidden)},
                       "d1": {"kernel": np.zeros((hidden, 2)), "bias": np.zeros(2)}}}


def _dnn_graph():
    return ChannelGraph((
        Group("in", 4, (Member(("params", "d0", "kernel"), 0),), fixed=True),
        Group("h", 8, (Member(("params", "d0", "kernel"), 1), Member(("params", "d0", "bias"), 0),
                       Member(("params", "d1", "kernel"), 0))),
        Group("out", 2, (Member(("params", "d1", "kernel"), 1),), fixed=True)))


def test_validate_accepts_matching_tree():
    _dnn_graph().validate(_dnn_vars())


def test_validate_names_offending_path_axis_and_sizes():
    v = _dnn_vars()
    v["params"]["d0"]["bias"] = np.zeros(7)
    msg = r"group 'h': params/d0/bias axis 0 has size 7, expected 8"
    with pytest.raises(ValueError, match=msg):
        _dnn_graph().validate(v)


def test_validate_names_missing_path():
    v = _dnn_vars()
    del v["params"]["d1"]
    with pytest.raises(ValueError, match=r"params/d1/kernel.*missing 'd1'"):
        _dnn_graph().validate(v)


def test_zoo_graph_rejects_foreign_variables():
    net = subnets.zoo.create("ds-cnn-s", num_classes=12)
    other = subnets.zoo.create("ds-cnn-m", num_classes=12)
    import jax

    with pytest.raises(ValueError, match=r"params/"):
        net.graph.validate(other.init(jax.random.key(0)))


def test_flatten_member_spatial():
    net = subnets.zoo.create("cnn-s", num_classes=12)
    (m,) = [m for m in net.graph["c1"].members if m.path[1] == "linear"]
    assert m.spatial == 16 * 4 and m.axis == 0


def test_graph_construction_errors():
    with pytest.raises(ValueError, match="duplicate group"):
        ChannelGraph((Group("a", 1, ()), Group("a", 2, ())))
    with pytest.raises(KeyError, match="no channel group 'zz'"):
        _dnn_graph()["zz"]
    with pytest.raises(ValueError, match="fixed at 4"):
        _dnn_graph().check_widths({"in": 3})
    with pytest.raises(ValueError, match=r"outside \[1, 8\]"):
        _dnn_graph().check_widths({"h": 9})


def test_set_paths_copies_only_changed_branches():
    v = _dnn_vars()
    new = set_paths(v, {("params", "d0", "bias"): np.ones(8)})
    assert new["params"]["d1"] is v["params"]["d1"]
    assert get_path(new, ("params", "d0", "bias")).sum() == 8
    assert v["params"]["d0"]["bias"].sum() == 0
