"""Training record: plain per-epoch lines off a terminal, metrics.jsonl, convergence warnings."""

import io
import json
import os
import sys

import jax
import numpy as np
import pytest

import subnets
from subnets import log, subspace, train


def _data(n=64, d=8):
    x = np.random.default_rng(0).normal(size=(n, d)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


def test_non_terminal_fit_writes_epoch_lines_and_metrics_jsonl(tmp_path, monkeypatch):
    err = io.StringIO()  # not a terminal: isatty() is False
    monkeypatch.setattr(sys, "stderr", err)
    net = subnets.zoo.create("dnn-s", num_classes=2, input_shape=(8,))
    x, y = _data()
    with log.run_dir(tmp_path):
        train.fit(net, net.init(jax.random.key(0)), x, y, epochs=3, batch_size=16,
                  key=jax.random.key(1), desc="unit")
    lines = [s for s in err.getvalue().splitlines() if s.startswith("unit epoch")]
    assert [s.split()[2] for s in lines] == ["1/3", "2/3", "3/3"]
    assert all(" loss " in s and " accuracy " in s for s in lines)
    rows = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["trainer"] == "unit" and r["seconds"] >= 0 and 0 <= r["accuracy"] <= 1
        assert np.isfinite(r["loss"])


def test_lcs_fit_records_both_ends_of_the_range(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    net = subnets.zoo.create("dnn-s", num_classes=2, input_shape=(8,), norm="none")
    x, y = _data()
    s = subspace.init_point(net, key=jax.random.key(0), compression="structured")
    with log.run_dir(tmp_path):
        subspace.fit(net, s, x, y, epochs=2, batch_size=16, key=jax.random.key(1), desc="lcs")
    rows = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all({"loss", "accuracy", "accuracy_low_end", "seconds"} <= set(r) for r in rows)
    assert "lcs epoch 2/2" in sys.stderr.getvalue()


def test_unconverged_run_warns():
    net = subnets.zoo.create("dnn-s", num_classes=2, input_shape=(8,))
    x, y = _data()
    import optax

    with pytest.warns(log.TrainingWarning, match="loss has not fallen"):
        train.fit(net, net.init(jax.random.key(0)), x, y, epochs=2, batch_size=16,
                  tx=optax.sgd(0.0), key=jax.random.key(1), progress=False)
    assert log.check_converged([1.0, 0.5], 0.9, 2) == []
    assert "at chance" in log.check_converged([1.0, 0.5], 0.1, 10)[0]


def test_compile_alarm_is_replaced_by_one_line(capfd):
    with log.quiet_compile_alarms("subnets: still compiling"):
        os.write(2, b"E0101 slow_operation_alarm.cc:65]\n********************************\n"
                    b"[Compiling module jit_step] Very slow compile? If you want to file a "
                    b"bug, run with envvar XLA_FLAGS=--xla_dump_to=/tmp/foo\n"
                    b"********************************\nan ordinary line\n")
    err = capfd.readouterr().err
    assert "Very slow compile" not in err and "slow_operation_alarm" not in err
    assert err.count("subnets: still compiling") == 1 and "an ordinary line" in err


def test_lcs_refuses_widths_outside_the_trained_range():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    s = subspace.init_point(net, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"width 0.2 is outside the trained range \[0.25, 1.0\]"):
        subspace.at_level(s, net, width=0.2)
    x, y = _data(8)
    with pytest.raises(ValueError, match="width 0.15"):
        subspace.evaluate_levels(net, s, x, y % 3, levels=(1.0, 0.15))
    with pytest.warns(subspace.RangeWarning, match="width 0.2"):
        v = subspace.at_level(s, net, width=0.2, out_of_range="warn")
    assert v["params"]["dense0"]["kernel"].shape[-1] == round(144 * 0.2)
    with pytest.raises(ValueError, match="out_of_range"):
        subspace.at_level(s, net, width=0.5, out_of_range="maybe")
