"""The cases of issue 11, each asserting its clear message: CLI errors in one line, Ctrl-C,
finite checks, strict inputs, bounded reads, and a fast kill-and-resume run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import subnets
from subnets import checkpoint, cost, io, runs, subspace, train
from subnets.runtime.family import Family
from subnets.transforms import permute, width_mask

ENV = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "subnets", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or ENV)


def _one_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------
# CLI errors: one line naming the path and the cause, non-zero exit, traceback with --debug.


def test_out_that_is_a_file_is_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = _cli("prune", "--model", "dnn-s", "--data", "digits", "--out", str(f), "--quiet")
    assert r.returncode == 2
    assert _one_line(r) == f"subnets prune: error: {f}: exists and is not a directory"


def test_unwritable_out_is_one_line_and_debug_shows_the_traceback():
    out = "/proc/subnets-no-such/run"
    r = _cli("prune", "--model", "dnn-s", "--data", "digits", "--out", out, "--quiet")
    assert r.returncode != 0
    line = _one_line(r)
    assert line.startswith("subnets prune: error: /proc/subnets-no-such")
    r = _cli("--debug", "prune", "--model", "dnn-s", "--data", "digits", "--out", out, "--quiet")
    assert "Traceback" in r.stderr and r.returncode != 0


def test_damaged_family_file_is_named(tmp_path):
    (tmp_path / "family.subnets").write_bytes(b"\x89SUBNET\n" + b"\0" * 40)
    r = _cli("export", str(tmp_path), "--out", str(tmp_path / "exp"), "--quiet")
    assert r.returncode == 2
    line = _one_line(r)
    assert f"{tmp_path / 'family.subnets'}:" in line


def test_non_finite_flags_are_refused(tmp_path):
    r = _cli("prune", "--lr", "nan", "--out", str(tmp_path / "a"), "--quiet")
    assert r.returncode == 2 and "--lr must be a finite number > 0, got nan" in _one_line(r)
    r = _cli("subspace", "--lr", "-1", "--out", str(tmp_path / "b"), "--quiet")
    assert r.returncode == 2 and "--lr must be a finite number > 0, got -1.0" in _one_line(r)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------
# Finite checks.


def test_fit_on_nan_data_stops_at_the_first_step():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    x = np.full((32, 8), np.nan, np.float32)
    y = np.zeros(32, np.int32)
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan at step 1 \(epoch 1\)"):
        train.fit(net, net.init(jax.random.key(0)), x, y, epochs=2, batch_size=16,
                  key=jax.random.key(1), progress=False)


def test_labels_out_of_range_are_refused():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    x = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\); found 1 outside"):
        train.fit(net, net.init(jax.random.key(0)), x, np.array([0, 1, 2, 3, 0, 1, 2, 0]),
                  epochs=1, key=jax.random.key(1), progress=False)


def test_nothing_non_finite_is_saved(tmp_path):
    with pytest.raises(ValueError, match="array params/w: 1 of 3 values are NaN"):
        io.save(tmp_path / "v.subnets", {"params": {"w": np.array([1.0, np.nan, 2.0])}})
    assert not (tmp_path / "v.subnets").exists()
    with pytest.raises(ValueError, match=r"\$\.levels\[0\]\.acc is nan"):
        io.write_json(tmp_path / "m.json", {"levels": [{"acc": float("nan")}]})
    io.write_json(tmp_path / "m.json", {"acc": float("inf")}, nonfinite="null")
    assert (tmp_path / "m.json").read_text() == '{\n "acc": null\n}\n'


# ------------------------------------------------------------------------------------------
# Strict inputs.


@pytest.fixture(scope="module")
def dnn():
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    return net, net.init(jax.random.key(0))


def test_numpy_widths_are_range_checked(dnn):
    net, v = dnn
    g = net.graph.free[0].name
    with pytest.raises(ValueError, match=rf"width -3 for group '{g}' outside"):
        net.graph.check_widths({g: np.int64(-3)})
    with pytest.raises(ValueError, match="width 1000 for group"):
        cost.macs(net, {g: np.int64(1000)})
    with pytest.raises(ValueError, match="width 1000 for group"):
        Family(net, v, [{g: np.int64(1000)}])
    with pytest.raises(TypeError, match="must be an integer, got the boolean"):
        net.graph.check_widths({g: True})
    with pytest.raises(TypeError, match="must be an integer"):
        net.graph.check_widths({g: 2.5})
    assert cost.macs(net, {g: np.int64(4)}) == cost.macs(net, {g: 4})


def test_width_mask_and_permute_are_validated(dnn):
    net, v = dnn
    g = net.graph.free[0]
    with pytest.raises(ValueError, match="outside"):
        width_mask(net.graph, v, {g.name: g.size + 1})
    for bad in (np.zeros(g.size, int), -np.arange(g.size), np.ones(g.size, bool),
                np.arange(g.size)[::-1] * 1.0):
        with pytest.raises((ValueError, TypeError), match="perm for group"):
            permute(net.graph, v, {g.name: bad})
    # Under jit a width mask still works (traced widths are not inspected).
    out = jax.jit(lambda w: width_mask(net.graph, v, {g.name: w}))(3)
    assert out is not None


def test_family_switch_names_the_range(dnn):
    net, v = dnn
    fam = Family(net, v, [net.graph.full_widths()])
    with pytest.raises(IndexError, match=r"level 99 out of range: this family has 1 levels"):
        fam.switch(99)


def test_forged_family_with_too_many_levels(dnn, tmp_path):
    net, v = dnn
    fam = Family(net, v, [net.graph.full_widths()])
    fam.save(tmp_path / "f.subnets")
    tree, meta = io.load(tmp_path / "f.subnets")
    meta["levels"] = [net.graph.full_widths()] * 10_000
    io.save(tmp_path / "f.subnets", tree, meta=meta)
    with pytest.raises(io.FormatError, match=r"f.subnets: a family holds 1..256 levels"):
        Family.load(tmp_path / "f.subnets")


def test_reads_are_bounded_by_the_real_size(tmp_path):
    import tracemalloc

    p = tmp_path / "v.subnets"
    io.save(p, {"w": np.arange(4, dtype=np.int8)})
    tracemalloc.start()
    io.load(p)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20, peak  # a 1 GiB default bound is never allocated up front


# ------------------------------------------------------------------------------------------
# Kill and Ctrl-C: a loadable checkpoint always remains, resume ends bit-identical.

LCS = ["subspace", "--model", "dnn-s", "--data", "digits", "--compression", "unstructured",
       "--norm", "none", "--batch-size", "32", "--limit", "128", "--levels", "unroll",
       "--quiet"]


def _final(out: Path) -> list[np.ndarray]:
    s, _ = subspace.load(out / "subspace")
    return [np.asarray(a) for a in jax.tree.leaves(s.base)]


def test_sigkill_inside_a_save_then_resume_is_bit_identical(tmp_path):
    ref = tmp_path / "ref"
    assert _cli(*LCS, "--epochs", "3", "--out", str(ref)).returncode == 0
    out = tmp_path / "run"
    env = {**ENV, "SUBNETS_CHECKPOINT_FAULT": "after_manifest@2"}
    r = _cli(*LCS, "--epochs", "3", "--out", str(out), env=env)
    assert r.returncode == -9
    assert checkpoint.restore(out / "checkpoint")[1]["epoch"] == 1  # epoch 1 survived
    r = _cli(*LCS, "--epochs", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    for a, b in zip(_final(ref), _final(out), strict=True):
        np.testing.assert_array_equal(a, b)


def test_ctrl_c_says_what_was_saved_and_exits_130(tmp_path):
    out = tmp_path / "run"
    env = {**ENV, "SUBNETS_CHECKPOINT_FAULT": "after_orbax@2:sleep=60"}
    argv = [*LCS, "--epochs", "2", "--out", str(out)]
    p = subprocess.Popen([sys.executable, "-m", "subnets", *argv], env=env,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    # Wait until the second save sleeps inside checkpoint.save (orbax done, manifest not yet).
    while (not list((out / "checkpoint").glob(".v000002.*.tmp/state/commit_success.txt"))
           and time.time() < deadline):
        time.sleep(0.2)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("subnets subspace: interrupted; saved in")
    assert "epoch 1 of 2" in line and "resume with: subnets subspace" in line
    assert not list((out / "checkpoint").glob(".v*.tmp"))  # the half-written save is gone
    assert checkpoint.restore(out / "checkpoint")[1]["epoch"] == 1
    assert runs.read_manifest(out)["status"] == "interrupted"
    r = _cli(*argv)
    assert r.returncode == 0, r.stderr


def test_fit_resumes_after_an_interrupted_epoch_bit_identically(dnn, tmp_path):
    net, v = dnn
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    kw = dict(epochs=3, batch_size=16, key=jax.random.key(1), progress=False)
    ref = train.fit(net, v, x, y, **kw)

    def stop(n, _):
        if n == 8:  # inside epoch 2 (6 steps per epoch)
            raise KeyboardInterrupt

    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        train.fit(net, v, x, y, checkpoint_dir=ck, on_step=stop, **kw)
    assert checkpoint.restore(ck)[1]["epoch"] == 1
    out = train.fit(net, v, x, y, checkpoint_dir=ck, **kw)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(out), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(checkpoint.CheckpointError, match="run of 3 epochs, this one has 4"):
        train.fit(net, v, x, y, checkpoint_dir=ck, **{**kw, "epochs": 4})


def test_a_reused_out_of_another_command_or_config_is_refused(tmp_path, capsys):
    from subnets.cli import main

    prune_dir = tmp_path / "prune"
    with runs.start(prune_dir, "prune", {"seed": 0}):
        (prune_dir / "metrics.json").write_text('{"levels": []}')
    rc = main(["nest", "--model", "dnn-s", "--data", "digits", "--out", str(prune_dir),
               "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "command ('prune' in the folder, 'nest' now)" in err and len(err.splitlines()) == 1
    assert (prune_dir / "metrics.json").read_text() == '{"levels": []}'  # untouched

    lcs = [*LCS, "--epochs", "1", "--out", str(tmp_path / "lcs")]
    from subnets.cli import build_parser
    from subnets.cli._run import config_of

    with runs.start(tmp_path / "lcs", "subspace", config_of(build_parser().parse_args(lcs))):
        pass  # as an earlier `subspace` run (unstructured, seed 0) left it
    rc = main([*lcs[:-2], "--seed", "9", "--compression", "structured", "--out",
               str(tmp_path / "lcs")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "config.compression ('unstructured' in the folder, 'structured' now)" in err
    assert "config.seed (0 in the folder, 9 now)" in err and "--force" in err
