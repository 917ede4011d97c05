"""matplotlib is the optional ``plot`` extra: clear ImportError in the library, PNG side products
skipped with one line, one CLI error line when a plot itself is asked for (issue 16)."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import pytest

from subnets import _plot
from subnets.cli import _execute, main

ROOT = Path(__file__).resolve().parents[1]
INSTALL = "pip install 'subnets[plot]'"
TINY = ["--model", "dnn-s", "--data", "digits", "--limit", "256", "--epochs", "1",
        "--batch-size", "64"]


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Simulate a machine without matplotlib (an import of it fails as if not installed)."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(_plot, "_said_skipped", False)


def test_matplotlib_is_an_extra_and_make_installs_it():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("matplotlib") for d in meta["dependencies"])
    assert any(d.startswith("matplotlib") for d in meta["optional-dependencies"]["plot"])
    install = [ln for ln in (ROOT / "Makefile").read_text().splitlines() if "pip install" in ln
               and "-e" in ln]
    assert install and all("plot" in ln for ln in install), install


def test_library_plot_raises_import_error_naming_the_extra(no_matplotlib, tmp_path):
    from subnets.nested.pipeline import plot

    with pytest.raises(ImportError, match=r"pip install 'subnets\[plot\]'") as e:
        plot({"levels": [{"macs": 1e6, "accuracy": 0.5}]}, tmp_path / "a.png")
    assert e.value.name == "matplotlib"
    assert not (tmp_path / "a.png").exists()
    with pytest.raises(ImportError, match="matplotlib"):
        with _plot.figure(tmp_path / "b.png", xlabel="x", ylabel="y"):
            pass
    assert not _plot.available()


def test_side_plot_skips_and_says_so_once(no_matplotlib, tmp_path, capsys):
    a = _plot.side_plot(_plot.accuracy_vs_macs, tmp_path / "a.png", {"x": [(1, 2.0)]})
    b = _plot.side_plot(_plot.accuracy_vs_macs, tmp_path / "b.png", {"x": [(1, 2.0)]})
    assert a is None and b is None and not list(tmp_path.iterdir())
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and INSTALL in err[0] and "a.png" in err[0], err


def test_side_plot_writes_when_matplotlib_is_there(tmp_path):
    path = tmp_path / "a.png"
    assert _plot.side_plot(_plot.accuracy_vs_macs, path, {"x": [(1, 2.0)]}) == str(path)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_demo_plot_is_skipped_not_fatal(no_matplotlib, tmp_path, capsys):
    from subnets.demo_report import plot

    metrics = {"config": {"model": "m", "data": "d"},
               "reds": {"levels": [{"macs": 10, "accuracy": 0.5}]}}
    assert plot(metrics, tmp_path / "acc.png") is None
    assert INSTALL in capsys.readouterr().err


def test_prune_cli_works_without_matplotlib(no_matplotlib, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["prune", *TINY, "--levels", "1", "--quiet", "--json", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out.strip().splitlines()[-1])
    assert res["png"] is None and res["levels"] == 2
    assert (out / "portfolio.subnets").exists() and not (out / "accuracy_vs_macs.png").exists()
    skipped = [ln for ln in cap.err.splitlines() if INSTALL in ln]
    assert len(skipped) == 1 and "Traceback" not in cap.err, cap.err


def test_cli_asked_for_a_plot_ends_with_one_line(no_matplotlib, tmp_path, capsys):
    """A command whose product IS a figure ends with one line naming the extra, exit 2."""
    def draw(args):
        with _plot.figure(tmp_path / "f.png", xlabel="x", ylabel="y"):
            pass

    args = argparse.Namespace(command="plotting", _run=draw)
    rc, line = _execute(args, ["plotting"], debug=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].endswith(line)
    assert "'matplotlib'" in line and INSTALL in line


@pytest.mark.slow  # the knapsack benchmark's --quick run (about a minute on 2 shared cores)
def test_benchmark_without_matplotlib_still_prints_its_json(tmp_path):
    import subprocess

    code = ("import sys, runpy; sys.modules['matplotlib'] = None; "
            f"sys.argv = ['knapsack.py', '--quick', '--out', {str(tmp_path / 'k.png')!r}]; "
            "runpy.run_path('benchmarks/knapsack.py', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["png"] is None
    assert [ln for ln in r.stderr.splitlines() if INSTALL in ln] and "Traceback" not in r.stderr
    assert not (tmp_path / "k.png").exists()
