"""ChannelGraph.validate: extra and missing leaves named by path, non-floating dtypes named with
the expected and the found dtype (issue 11, strict inputs)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import subnets
from subnets.graph import ChannelGraph, Group, Member
from subnets.graph.types import leaf_paths, set_paths


@pytest.fixture(scope="module")
def net():
    return subnets.zoo.create("dnn-s", num_classes=3, input_shape=(6,))


@pytest.fixture(scope="module")
def variables(net):
    return jax.tree.map(np.asarray, net.init(jax.random.key(0)))


def _add(tree, path, leaf):
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tree.items()}
    node = out
    for k in path[:-1]:
        node[k] = dict(node.get(k, {}))
        node = node[k]
    node[path[-1]] = leaf
    return out


def test_validate_accepts_the_models_own_variables(net, variables):
    net.graph.validate(variables)


@settings(max_examples=25, deadline=None)
@given(where=st.integers(0, 10_000), name=st.text("abcxyz_", min_size=1, max_size=8),
       nested=st.booleans())
def test_an_extra_leaf_anywhere_is_named(net, variables, where, name, nested):
    paths = [p for p, _ in leaf_paths(variables)]
    parent = paths[where % len(paths)][:-1]
    path = (*parent, "extra_" + name, *(("inner",) if nested else ()))
    bad = _add(variables, path, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="^" + "/".join(path) + ": an array the graph does not"):
        net.graph.validate(bad)


def test_an_extra_collection_is_named(net, variables):
    bad = {**variables, "cache": {"x": np.zeros(2, np.float32)}}
    with pytest.raises(ValueError, match=r"^cache/x: an array the graph does not know"):
        net.graph.validate(bad)


def test_a_missing_non_member_leaf_is_named():
    # The graph records two arrays; only one is a member of a group.
    g = ChannelGraph((Group("h", 2, (Member(("p", "w"), 0),)),),
                     shapes=((("p", "w"), (2,)), (("p", "s"), ())))
    g.validate({"p": {"w": np.zeros(2, np.float32), "s": np.float32(1.0)}})
    with pytest.raises(ValueError, match=r"^p/s: missing; the graph records this array"):
        g.validate({"p": {"w": np.zeros(2, np.float32)}})


@settings(max_examples=20, deadline=None)
@given(where=st.integers(0, 10_000),
       dtype=st.sampled_from(["int32", "int8", "uint8", "bool", "int64", "complex64"]))
def test_a_non_floating_leaf_names_path_and_dtypes(net, variables, where, dtype):
    paths = [p for p, _ in leaf_paths(variables)]
    path = paths[where % len(paths)]
    leaf = variables
    for k in path:
        leaf = leaf[k]
    bad = set_paths(variables, {path: np.asarray(leaf).astype(dtype)})
    msg = "^" + "/".join(path) + r": expected dtype floating \(float32, bfloat16, \.\.\.\), " \
          f"found {dtype}$"
    with pytest.raises(ValueError, match=msg):
        net.graph.validate(bad)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "bfloat16"])
def test_every_floating_dtype_passes(net, variables, dtype):
    import ml_dtypes

    dt = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    net.graph.validate(jax.tree.map(lambda a: np.asarray(a).astype(dt), variables))


def test_a_leaf_that_is_not_an_array_is_named(net, variables):
    path = next(p for p, _ in leaf_paths(variables))
    bad = set_paths(variables, {path: "weights"})
    with pytest.raises(ValueError, match="^" + "/".join(path) + r": expected an array of dtype "
                                         "floating, found str"):
        net.graph.validate(bad)


def test_sliced_variables_still_validate_at_their_widths(net, variables):
    widths = {name: max(1, size // 2) for name, size in net.graph.sizes.items()}
    small = subnets.transforms.slice_widths(net.graph, variables, widths)
    net.graph.validate(small, widths=widths)
    bad = _add(small, ("params", "ghost"), np.zeros(1, np.float32))
    with pytest.raises(ValueError, match=r"^params/ghost: an array"):
        net.graph.validate(bad, widths=widths)


def test_a_graph_read_back_from_a_dict_checks_the_same(net, variables):
    g = ChannelGraph.from_dict(net.graph.to_dict())
    g.validate(variables)
    with pytest.raises(ValueError, match=r"^params/zz: an array"):
        g.validate(_add(variables, ("params", "zz"), np.zeros(1, np.float32)))


def test_a_hand_declared_graph_without_shapes_checks_only_members_and_dtypes():
    g = ChannelGraph((Group("h", 2, (Member(("p", "w"), 0),)),))
    g.validate({"p": {"w": np.zeros(2, np.float32), "other": np.zeros(5, np.float32)}})
    with pytest.raises(ValueError, match=r"^p/other: expected dtype floating .* found int32"):
        g.validate({"p": {"w": np.zeros(2, np.float32), "other": np.zeros(5, np.int32)}})
