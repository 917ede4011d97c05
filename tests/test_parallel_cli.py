"""``--devices 4`` on ``nest``, ``prune`` and ``demo`` gives the metrics of one device.

Each command runs twice in one fresh process with 4 simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``, set before JAX starts): once with
``--devices 1`` (no mesh) and once with ``--devices 4`` (every batch split over the mesh). The
two runs differ only in the order of float additions, so their losses and accuracies agree
within float tolerance (an accuracy may move by a near-tie example or two).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    from subnets.cli import main
    assert len(jax.devices()) == 4, jax.devices()
    out, args = sys.argv[1], json.loads(sys.argv[2])
    for n in (1, 4):
        rc = main([*args, "--out", f"{out}/d{n}", "--devices", str(n)])
        assert rc == 0, (n, rc)
""")


def _run_twice(tmp_path, args, timeout=1500):
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4 "
                        "--xla_cpu_multi_thread_eigen=false"}
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), json.dumps(args)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads((tmp_path / f"d{n}" / "metrics.json").read_text()) for n in (1, 4)]


def _epoch_losses(path):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["loss"] for r in rows if "loss" in r]


def _close_accuracy(a, b, n_test, examples=2):
    assert abs(a - b) <= examples / n_test + 1e-9, (a, b)


@pytest.mark.slow
def test_nest_devices_4_equals_1(tmp_path):
    one, four = _run_twice(tmp_path, [
        "nest", "--model", "dnn-s", "--data", "digits", "--budgets", "0.5", "--epochs", "2",
        "--finetune-epochs", "1", "--batch-size", "64", "--limit", "512", "--score-batches",
        "2", "--quiet"])
    n_test = 512
    _close_accuracy(one["base"]["accuracy"], four["base"]["accuracy"], n_test)
    assert len(one["levels"]) == len(four["levels"]) == 2
    for a, b in zip(one["levels"], four["levels"], strict=True):
        assert a["widths"] == b["widths"]
        _close_accuracy(a["accuracy"], b["accuracy"], n_test)
    la = _epoch_losses(tmp_path / "d1" / "metrics.jsonl")
    lb = _epoch_losses(tmp_path / "d4" / "metrics.jsonl")
    assert len(la) == len(lb) >= 3  # 2 base epochs + 1 joint fine-tuning epoch
    np.testing.assert_allclose(la, lb, rtol=1e-3)
    assert la[1] < la[0]  # it trained


@pytest.mark.slow
def test_prune_devices_4_equals_1(tmp_path):
    one, four = _run_twice(tmp_path, [
        "prune", "--method", "imp", "--model", "dnn-s", "--data", "digits", "--levels", "1",
        "--fraction", "0.5", "--epochs", "2", "--batch-size", "64", "--limit", "512",
        "--quiet"])
    assert [r["name"] for r in one["levels"]] == [r["name"] for r in four["levels"]]
    for a, b in zip(one["levels"], four["levels"], strict=True):
        assert a["params_after"] == b["params_after"]
        _close_accuracy(a["accuracy_removed"], b["accuracy_removed"], one["test_examples"])
    la = _epoch_losses(tmp_path / "d1" / "metrics.jsonl")
    lb = _epoch_losses(tmp_path / "d4" / "metrics.jsonl")
    assert len(la) == len(lb) == 4  # 2 levels x 2 epochs
    np.testing.assert_allclose(la, lb, rtol=1e-3)


@pytest.mark.slow
@pytest.mark.timeout(3000)  # two demo runs (export and C build included) on a shared machine
def test_demo_devices_4_equals_1(tmp_path):
    pytest.importorskip("tensorflow")
    one, four = _run_twice(tmp_path, ["demo", "--quick", "--data", "digits", "--epochs", "6",
                                      "--json"], timeout=2900)
    _close_accuracy(one["base"]["accuracy"], four["base"]["accuracy"],
                    one["base"]["test_examples"])
    for key in ("reds", "lcs", "imp", "reconvene"):
        assert len(one[key]["levels"]) == len(four[key]["levels"]), key
        for a, b in zip(one[key]["levels"], four[key]["levels"], strict=True):
            _close_accuracy(a["accuracy"], b["accuracy"], one["base"]["test_examples"])
    assert one["base"]["accuracy"] > 0.2  # it trained (chance: 0.1)
