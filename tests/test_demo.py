"""``subnets demo --quick``: every method end to end, its report, and resume after a rerun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _demo(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "subnets", "demo", "--quick", "--data",
                           "digits", "--out", str(out), "--json", *extra],
                          capture_output=True, text=True, env=env, timeout=900, check=False)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("demo") / "run"
    r = _demo(out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_demo_writes_every_method_and_the_report(demo_run):
    out, r = demo_run
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["out"] == str(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["data"] == "digits" and metrics["config"]["quick"] is True
    reds = metrics["reds"]["levels"]
    assert [lv["budget"] for lv in reds] == [0.25, 0.5, 0.75, 1.0]
    for lv in reds:  # true MACs within each budget, every level smaller than the next
        assert lv["macs_fraction"] <= lv["budget"] + 1e-9
    assert [lv["macs"] for lv in reds] == sorted(lv["macs"] for lv in reds)
    assert metrics["reds"]["family"]["memory_bytes"] < metrics["reds"]["family"]["separate_bytes"]
    widths = [lv["width"] for lv in metrics["lcs"]["levels"]]
    assert widths == sorted(widths) and len(widths) >= 3
    for key in ("imp", "reconvene"):
        assert metrics[key]["levels"] and all(lv["removal_exact"]
                                              for lv in metrics[key]["levels"])
    assert metrics["reconvene"]["levels"][-1]["params_after"] < metrics["base"]["params"]
    tfl = metrics["tflite"]["levels"]
    assert len(tfl) == len(reds)
    assert [e["flash_bytes"] for e in tfl] == sorted(e["flash_bytes"] for e in tfl)
    assert all(e["agreement"] >= 0.9 for e in tfl)  # int8 TFLM vs float JAX, per level
    assert sorted(p.name for p in (out / "tflite").glob("*.tflite")) == \
        [f"level{i}.tflite" for i in range(len(tfl))]
    nc = metrics["nested_c"]
    if shutil.which("gcc") or shutil.which("cc"):
        # int8 vs float: quantisation may flip a near-tie (bit-exactness with TFLM is
        # tested in tests/test_mcu_*.py)
        assert nc["built"] and min(nc["class_agreement_levels"]) >= 0.8
    report = (out / "report.md").read_text()
    for section in ("## REDS", "## LCS", "## DNNShifter", "## Reconvene", "## int8 TFLite",
                    "## One nested C artifact", "subnets demo --quick"):
        assert section in report, section
    assert (out / "accuracy_vs_macs.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "demo" and manifest["status"] == "complete"


def test_a_rerun_resumes_every_finished_step(demo_run):
    out, _ = demo_run
    r = _demo(out)
    assert r.returncode == 0, r.stderr[-3000:]
    for step in ("base", "reds", "lcs", "imp", "reconvene", "tflite", "nested_c"):
        assert f"[{step}] done in an earlier run" in r.stderr, step


def test_without_matplotlib_the_demo_skips_only_its_plot(demo_run):
    """matplotlib is the optional plot extra: a (resumed) demo without it still writes the
    report, says once that the PNG was skipped, and the report says why there is no plot."""
    out, _ = demo_run
    (out / "accuracy_vs_macs.png").unlink()
    code = ("import sys; sys.modules['matplotlib'] = None; from subnets.cli import main; "
            f"sys.exit(main(['demo', '--quick', '--data', 'digits', '--out', {str(out)!r}, "
            "'--json']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    skipped = [ln for ln in r.stderr.splitlines() if "pip install 'subnets[plot]'" in ln]
    assert len(skipped) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert not (out / "accuracy_vs_macs.png").exists()
    report = (out / "report.md").read_text()
    assert "![accuracy vs MACs]" not in report and "subnets[plot]" in report
