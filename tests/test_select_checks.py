"""Every bad input of REDS width selection and ``subnets nest`` fails with a clear message."""

from __future__ import annotations

import numpy as np
import pytest

import subnets
from subnets import cost
from subnets.cli import main
from subnets.nested.select import select_widths


@pytest.fixture(scope="module")
def net():
    return subnets.zoo.create("ds-cnn-s", num_classes=12)


@pytest.fixture(scope="module")
def scores(net):
    return {g.name: np.random.default_rng(0).random(g.size) for g in net.graph.free}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_scores_name_the_group(net, scores, bad):
    s = dict(scores)
    s["g2"] = s["g2"].copy()
    s["g2"][5] = bad
    with pytest.raises(ValueError, match=r"scores for group 'g2' are not finite at unit 5"):
        select_widths(net, s, [0.5])


def test_nonfinite_scores_on_a_residual_graph_name_the_group():
    res = subnets.zoo.create("cpreresnet20", num_classes=10, input_shape=(32, 32, 3))
    s = {g.name: np.ones(g.size) for g in res.graph.free}
    s["s1b0a"] = np.full(res.graph["s1b0a"].size, np.nan)
    with pytest.raises(ValueError, match="group 's1b0a'"):
        select_widths(res, s, [0.5])


def test_budget_above_one_says_what_was_meant(net, scores):
    with pytest.raises(ValueError, match=r"budget 1.5 is above 1: budgets are fractions of the "
                                         r"full network's macs in \(0, 1\]; .*'1.5 macs' or pass "
                                         r"absolute=True"):
        select_widths(net, scores, [0.5, 1.5])


def test_absolute_budgets_need_a_unit_or_the_flag(net, scores):
    full = cost.macs(net)
    amount = 0.4 * full
    (a,) = select_widths(net, scores, [f"{amount} macs"])
    (b,) = select_widths(net, scores, [amount], absolute=True)
    (c,) = select_widths(net, scores, [0.4])
    assert a == b == c
    assert cost.macs(net, a) <= amount
    with pytest.raises(ValueError, match=r"is in 'params', but this entry constrains 'macs'"):
        select_widths(net, scores, ["100 params"])


@pytest.mark.parametrize("budgets, message", [
    ([np.nan], r"budget nan is nan: budgets must be finite"),
    ([np.inf], r"budget inf is inf: budgets must be finite"),
    ([0.0], r"budget 0 must be positive"),
    ([-0.5], r"budget -0.5 must be positive"),
    (["half"], r"budget 'half': write a fraction such as 0.5 or an amount with its unit"),
    (["nan macs"], r"budget 'nan macs': the amount must be a positive finite number"),
    ([[0.5, 0.5]], r"budget \[0.5, 0.5\] has 2 entries for resources \('macs',\)"),
    ([], r"budgets is empty"),
    (0.5, r"budgets must be a list with one budget per level, got 0.5; for one level write "
          r"\[0.5\]"),
    ("0.5", r"budgets must be a list .* got '0.5'"),
])
def test_bad_budgets(net, scores, budgets, message):
    with pytest.raises(ValueError, match=message):
        select_widths(net, scores, budgets)


def test_unknown_groups_in_scores_are_named(net, scores):
    with pytest.raises(ValueError, match=r"scores name groups that are not in the graph: "
                                         r"\['conv9'\]"):
        select_widths(net, {**scores, "conv9": np.ones(3)}, [0.5])


def test_missing_and_misshapen_scores(net, scores):
    s = dict(scores)
    del s["g1"]
    with pytest.raises(ValueError, match=r"scores missing for groups \['g1'\]"):
        select_widths(net, s, [0.5])
    with pytest.raises(ValueError, match=r"scores for group 'g1' have shape \(3,\)"):
        select_widths(net, {**scores, "g1": np.ones(3)}, [0.5])


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_min_units_below_one_or_not_an_integer(net, scores, bad):
    with pytest.raises(ValueError, match=r"min_units must be"):
        select_widths(net, scores, [0.5], min_units=bad)


def test_heuristic_is_explicit(net, scores):
    with pytest.raises(ValueError, match=r"heuristic must be None or 'lagrangian'"):
        select_widths(net, scores, [0.5], heuristic="greedy")


def test_too_wide_graph_names_the_groups_and_offers_the_heuristic():
    res = subnets.zoo.create("cpreresnet20", num_classes=10, input_shape=(32, 32, 3))
    s = {g.name: np.random.default_rng(1).random(g.size) for g in res.graph.free}
    with pytest.raises(ValueError, match=r"widest bag \['s1', 's2b0b', 's2'\].*"
                                         r"heuristic='lagrangian'"):
        select_widths(res, s, [0.5], max_states=10_000)
    levels, info = select_widths(res, s, [0.25, 0.5], heuristic="lagrangian", return_info=True)
    for w, f, i in zip(levels, [0.25, 0.5], info, strict=True):
        assert cost.macs(res, w) <= f * cost.macs(res)
        assert i["solver"] == "lagrangian" and not i["exact"]
        assert 0.0 <= i["gap"] == pytest.approx(i["bound"] - i["value"])
    assert all(levels[0][g] <= levels[1][g] for g in levels[0])
    exact, einfo = select_widths(res, s, [0.25, 0.5], return_info=True)
    assert all(e["exact"] and e["gap"] == 0.0 for e in einfo)
    # the exact first level is at least as good, and within the heuristic's reported bound
    assert info[0]["value"] <= einfo[0]["value"] + 1e-9 <= info[0]["bound"] + 2e-9


QUICK = ["--epochs", "1", "--finetune-epochs", "1", "--score-batches", "2", "--quiet",
         "--data", "digits"]


@pytest.mark.parametrize("extra, message", [
    (["--budgets", "0.5,1.5"], "budget 1.5 is above 1"),
    (["--budgets", "0.5,2e9macs"], "above the full model's macs"),
    (["--distill", "1.5"], "--distill must be in [0, 1]"),
    (["--min-units", "0"], "--min-units must be >= 1"),
    (["--limit", "32", "--batch-size", "64"], "--limit 32 is below --batch-size 64"),
    (["--objective", "kernels", "--score", "l1"], "--objective kernels needs --score taylor"),
])
def test_nest_validates_before_training(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main(["nest", "--model", "dnn-s", "--out", str(out), *QUICK, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "base").exists()  # nothing trained


def test_nest_budget_parser_rejects_garbage(tmp_path):
    with pytest.raises(SystemExit):
        main(["nest", "--budgets", "0.5,abc", "--out", str(tmp_path)])
