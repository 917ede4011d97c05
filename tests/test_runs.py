"""Run provenance: manifest, config-mismatch refusal, --force moving aside, the lock."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from subnets import runs
from subnets.runs import RunError


def test_manifest_records_the_run(tmp_path):
    out = tmp_path / "run"
    with runs.start(out, "nest", {"seed": 3, "epochs": 2}, seed=3, argv=["subnets", "nest"]) as r:
        r.check_data(runs.fingerprint([1, 2], [0, 1]))
        r.mark_saved("the base model")
        assert (out / runs.LOCK).is_file()
    m = json.loads((out / "manifest.json").read_text())
    assert m["command"] == "nest" and m["config"] == {"seed": 3, "epochs": 2}
    assert m["seed"] == 3 and m["status"] == "complete" and m["ended"] >= m["started"]
    assert m["data_fingerprint"].startswith("sha256:") and m["version"]
    assert m["saved"] == "the base model" and m["argv"] == ["subnets", "nest"]
    assert not (out / runs.LOCK).exists()


def test_a_rerun_with_other_settings_names_the_keys(tmp_path):
    out = tmp_path / "run"
    with runs.start(out, "subspace", {"seed": 0, "compression": "unstructured", "lr": 0.1}):
        pass
    with pytest.raises(RunError, match=r"config\.compression \('unstructured' in the folder, "
                                       r"'structured' now\), config\.seed \(0 in the folder, 9"):
        runs.start(out, "subspace", {"seed": 9, "compression": "structured", "lr": 0.1})
    with pytest.raises(RunError, match=r"command \('subspace' in the folder, 'nest' now\)"):
        runs.start(out, "nest", {"seed": 0, "compression": "unstructured", "lr": 0.1})
    # The same settings resume.
    with runs.start(out, "subspace", {"seed": 0, "compression": "unstructured", "lr": 0.1}) as r:
        assert r.resumed
    # Keys outside the identity may change.
    with runs.start(out, "subspace", {"seed": 0, "compression": "unstructured", "lr": 0.5},
                    identity=["seed", "compression"]) as r:
        assert r.resumed and r.manifest["config"]["lr"] == 0.5


def test_other_data_is_refused(tmp_path):
    out = tmp_path / "run"
    with runs.start(out, "prune", {"seed": 0}) as r:
        r.check_data(runs.fingerprint([1, 2, 3]))
    with (runs.start(out, "prune", {"seed": 0}) as r,
          pytest.raises(RunError, match="different data")):
        r.check_data(runs.fingerprint([1, 2, 4]))


def test_force_moves_the_old_run_aside(tmp_path):
    out = tmp_path / "run"
    with runs.start(out, "prune", {"seed": 0}):
        (out / "metrics.json").write_text("{}")
    with runs.start(out, "prune", {"seed": 1}, force=True) as r:
        assert not r.resumed
    moved = r.moved_to
    assert moved.name.startswith("run.old-") and (moved / "metrics.json").read_text() == "{}"
    assert json.loads((moved / "manifest.json").read_text())["config"] == {"seed": 0}
    assert runs.read_manifest(out)["config"] == {"seed": 1}


def test_a_foreign_folder_or_a_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="holds no manifest.json"):
        runs.start(tmp_path, "nest", {})
    with pytest.raises(RunError, match="not a directory"):
        runs.start(tmp_path / "notes.txt", "nest", {})
    with pytest.raises(RunError, match="nothing to resume"):
        runs.start(tmp_path / "new", "nest", {}, require_resume=True)


def test_a_run_that_failed_before_saving_can_be_replaced(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ZeroDivisionError), runs.start(out, "nest", {"model": "typo"}):
        1 / 0  # noqa: B018
    assert runs.read_manifest(out)["status"] == "failed"
    with runs.start(out, "nest", {"model": "ds-cnn-s"}) as r:
        assert not r.resumed


def test_a_live_lock_keeps_a_second_process_out(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / runs.LOCK).write_text(json.dumps({"pid": holder.pid,
                                                 "host": socket.gethostname(), "since": "x"}))
        with pytest.raises(RunError, match=rf"in use by pid {holder.pid}"):
            runs.start(out, "nest", {})
        with pytest.raises(RunError, match="in use"):
            runs.start(out, "nest", {}, force=True)  # never moves a folder in use
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match="stale lock"):
        run = runs.start(out, "nest", {})
    run.finish()
