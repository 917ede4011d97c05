"""Kill-safety harness: SIGKILL each long command at many points, including inside
``checkpoint.save``; a loadable checkpoint always remains, nothing earlier is deleted, and the
resumed run ends bit-identical to an uninterrupted one. (A fast variant is in
``test_reliability.py``.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from subnets import checkpoint, io, subspace

pytestmark = pytest.mark.slow

ENV = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
LCS = ["subspace", "--model", "dnn-s", "--data", "digits", "--compression", "unstructured",
       "--norm", "none", "--batch-size", "32", "--limit", "128", "--levels", "unroll",
       "--quiet", "--epochs", "3"]
NEST = ["nest", "--model", "dnn-s", "--data", "digits", "--budgets", "0.5", "--limit", "256",
        "--epochs", "2", "--finetune-epochs", "2", "--batch-size", "64", "--score-batches", "2",
        "--quiet"]


def _cli(args, fault=None):
    env = {**ENV, "SUBNETS_CHECKPOINT_FAULT": fault} if fault else ENV
    return subprocess.run([sys.executable, "-m", "subnets", *args], capture_output=True,
                          text=True, timeout=600, env=env)


def _latest(d: Path) -> int:
    p = d / "latest"
    return int(p.read_text().strip()[1:]) if p.is_file() else 0


def _lcs_leaves(out: Path):
    s, _ = subspace.load(out / "subspace")
    return [np.asarray(a) for a in jax.tree.leaves((s.base, s.end))]


@pytest.fixture(scope="module")
def lcs_ref(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    r = _cli([*LCS, "--out", str(out)])
    assert r.returncode == 0, r.stderr
    return _lcs_leaves(out)


@pytest.mark.parametrize("fault", ["after_orbax@1", "after_manifest@2", "after_rename@2",
                                   "after_pointer@2", "after_orbax@3", "after_pointer@3"])
def test_subspace_killed_anywhere_resumes_to_the_same_weights(tmp_path, lcs_ref, fault):
    out = tmp_path / "run"
    r = _cli([*LCS, "--out", str(out)], fault=fault)
    assert r.returncode == -9, r.stderr
    n = int(fault.split("@")[1])
    committed = n if fault.startswith("after_pointer") else n - 1
    if committed:
        assert checkpoint.restore(out / "checkpoint")[1]["epoch"] == committed
    else:
        assert not checkpoint.exists(out / "checkpoint")
    r = _cli([*LCS, "--out", str(out)])
    assert r.returncode == 0, r.stderr
    for a, b in zip(lcs_ref, _lcs_leaves(out), strict=True):
        np.testing.assert_array_equal(a, b)


def _family(out: Path):
    tree, meta = io.load(out / "family.subnets")
    return [np.asarray(a) for a in jax.tree.leaves(tree)], meta


@pytest.fixture(scope="module")
def nest_ref(tmp_path_factory):
    out = tmp_path_factory.mktemp("nref") / "run"
    r = _cli([*NEST, "--out", str(out)])
    assert r.returncode == 0, r.stderr
    return _family(out), json.loads((out / "metrics.json").read_text())


# Saves: 1, 2 = base training epochs 1, 2; 3 = the base model; 4 = the scored selection;
# 5, 6 = fine-tuning epochs 1, 2.
@pytest.mark.parametrize("fault", ["after_manifest@1", "after_pointer@1", "after_rename@3",
                                   "after_pointer@3", "after_orbax@4", "after_pointer@4",
                                   "after_rename@5", "after_pointer@5", "after_manifest@6"])
def test_nest_killed_anywhere_resumes_to_the_same_family(tmp_path, nest_ref, fault):
    out = tmp_path / "run"
    r = _cli([*NEST, "--out", str(out)], fault=fault)
    assert r.returncode == -9, r.stderr
    stages = ("base", "base_training", "selection", "finetune")
    before = {d: _latest(out / d) for d in stages}
    assert any(v for v in before.values()) or fault == "after_manifest@1"
    r = _cli([*NEST, "--out", str(out)])
    assert r.returncode == 0, r.stderr
    for d, v in before.items():  # nothing committed before the kill was lost or replaced
        assert _latest(out / d) >= v
        assert checkpoint.exists(out / d) or v == 0
    for d in ("base", "selection"):  # a saved stage is restored, not computed and saved again
        assert before[d] == 0 or _latest(out / d) == before[d]
    # Fine-tuning resumed: versions are numbered by save, so a restart would go past 2.
    assert checkpoint.restore(out / "finetune")[1]["epoch"] == 2
    assert _latest(out / "finetune") == 2
    leaves, _ = _family(out)
    metrics = json.loads((out / "metrics.json").read_text())
    for a, b in zip(nest_ref[0][0], leaves, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [lv["accuracy"] for lv in metrics["levels"]] == \
        [lv["accuracy"] for lv in nest_ref[1]["levels"]]


PRUNE = ["prune", "--method", "pai", "--model", "dnn-s", "--data", "digits", "--density",
         "0.5,0.3", "--epochs", "1", "--batch-size", "64", "--limit", "256", "--quiet"]


def test_prune_killed_after_a_level_resumes_to_the_same_models(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert _cli([*PRUNE, "--out", str(ref)]).returncode == 0
    r = _cli([*PRUNE, "--out", str(out)], fault="after_pointer@1")  # level_0 committed
    assert r.returncode == -9, r.stderr
    assert checkpoint.exists(out / "checkpoints" / "level_0")
    assert not checkpoint.exists(out / "checkpoints" / "level_1")
    r = _cli([*PRUNE, "--out", str(out)])
    assert r.returncode == 0, r.stderr
    # pai levels are named level_1, level_2 (checkpoints/level_<i> counts from 0).
    for name in ("level_1", "level_2"):
        a, meta_a = io.load(ref / f"{name}.subnets")
        b, meta_b = io.load(out / f"{name}.subnets")
        assert meta_a == meta_b
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)


IMP = ["prune", "--method", "imp", "--model", "dnn-s", "--data", "digits", "--levels", "1",
       "--epochs", "2", "--rewind-step", "1", "--batch-size", "64", "--limit", "256", "--quiet"]


@pytest.fixture(scope="module")
def imp_ref(tmp_path_factory):
    out = tmp_path_factory.mktemp("iref") / "run"
    r = _cli([*IMP, "--out", str(out)])
    assert r.returncode == 0, r.stderr
    return out


# Saves: 1 = round 0's rewind point, 2, 3 = round 0 epochs 1, 2, 4 = round 0; 5 = round 1's
# rewind point (unused), 6, 7 = round 1 epochs 1, 2, 8 = round 1.
@pytest.mark.parametrize("fault", ["after_pointer@2", "after_manifest@4", "after_pointer@6",
                                   "after_rename@7", "after_orbax@8"])
def test_prune_imp_killed_anywhere_resumes_to_the_same_models(tmp_path, imp_ref, fault):
    out = tmp_path / "run"
    r = _cli([*IMP, "--out", str(out)], fault=fault)
    assert r.returncode == -9, r.stderr
    ck = out / "checkpoints"
    n = int(fault.split("@")[1])
    round0 = n > 4 or (n == 4 and fault.startswith("after_pointer"))
    assert checkpoint.exists(ck / "level_0") == round0
    assert not checkpoint.exists(ck / "level_1")
    training = ck / ("level_1_training" if round0 else "level_0_training") / "training"
    before = _latest(training)
    r = _cli([*IMP, "--out", str(out)])
    assert r.returncode == 0, r.stderr
    assert "resuming the run" not in r.stderr  # --quiet
    for name in ("level_0", "level_1"):
        a, meta_a = io.load(imp_ref / f"{name}.subnets")
        b, meta_b = io.load(out / f"{name}.subnets")
        assert meta_a == meta_b
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)
    assert checkpoint.exists(ck / "level_0") and checkpoint.exists(ck / "level_1")
    assert before == 0 or not training.exists()  # resumed, finished, then cleared


DEMO = ["demo", "--quick", "--data", "digits", "--json"]


def _figures(metrics: dict) -> dict:
    """The demo's measured figures, without what differs between two runs by design."""
    drop = {"seconds", "wall_seconds", "time", "out", "path", "png", "started", "finished"}

    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if k not in drop and "seconds" not in k}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(metrics)


@pytest.mark.parametrize("nth", [1, 2])
def test_demo_killed_mid_run_resumes_to_the_same_figures(tmp_path, nth):
    """SIGKILL inside the demo's ``nth`` checkpoint save; ``--resume`` ends with the figures of
    an uninterrupted run (every step is seeded, so finished steps and resumed training agree)."""
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert _cli([*DEMO, "--out", str(ref)]).returncode == 0
    r = _cli([*DEMO, "--out", str(out)], fault=f"after_manifest@{nth}")
    assert r.returncode == -9, r.stderr[-2000:]
    assert not (out / "metrics.json").exists()
    r = _cli([*DEMO, "--out", str(out), "--resume"])
    assert r.returncode == 0, r.stderr[-2000:]
    ra = json.loads((ref / "metrics.json").read_text())
    rb = json.loads((out / "metrics.json").read_text())
    assert _figures(ra) == _figures(rb)
