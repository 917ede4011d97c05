"""CLI conventions on every command: --json, one-line errors, --config files, defaults in
--help, and the message naming the extra that adds a missing optional package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import subnets
from subnets import export
from subnets.cli import COMMANDS, main
from subnets.runtime.family import Family

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "dnn-s", "--data", "digits", "--limit", "256", "--epochs", "1",
        "--batch-size", "64"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "subnets", *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)


def _only_json(r: subprocess.CompletedProcess) -> dict:
    """stdout is exactly one JSON object (its last line) and nothing else."""
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stdout
    out = json.loads(lines[-1])
    assert isinstance(out, dict)
    return out


@pytest.fixture()
def run_dir(tmp_path):
    """What `subnets nest --out` writes: family.subnets and metrics.json."""
    net = subnets.zoo.create("dnn-s", num_classes=10, input_shape=(8, 8, 1))
    fam = Family(net, net.init(jax.random.key(0)), export.uniform_levels(net.graph, [0.5, 1.0]))
    d = tmp_path / "run"
    d.mkdir()
    fam.save(d / "family.subnets")
    (d / "metrics.json").write_text(json.dumps({"data": "digits"}))
    return d


# --- --json ---------------------------------------------------------------------------------

def test_info_json_is_the_only_stdout():
    report = _only_json(_cli("info", "dnn-s", "--json"))
    assert report["model"] == "dnn-s" and report["macs"] > 0
    assert _only_json(_cli("info", "list", "--json"))["models"][0] == "dnn-s"


def test_prune_json_summary_and_logs_on_stderr(tmp_path):
    out = tmp_path / "p"
    r = _cli("prune", *TINY, "--levels", "1", "--out", str(out), "--json")
    res = _only_json(r)
    assert res["command"] == "prune" and res["levels"] == 2
    assert Path(res["metrics"]).is_file() and Path(res["portfolio"]).is_file()
    assert [lv["name"] for lv in res["per_level"]] == ["level_0", "level_1"]
    assert "level_1" in r.stderr  # the table is a log line: stderr


def test_export_nested_c_json(run_dir, tmp_path):
    res = _only_json(_cli("export", str(run_dir), "--out", str(tmp_path / "e"), "--formats",
                          "nested-c", "--float", "--json"))
    assert res["command"] == "export" and res["formats"] == ["nested-c"]
    assert Path(res["nested_c"]["dir"]).is_dir() and isinstance(res["fits"], bool)


@pytest.mark.slow
def test_export_tflite_json(run_dir, tmp_path):
    pytest.importorskip("tensorflow")
    res = _only_json(_cli("export", str(run_dir), "--out", str(tmp_path / "e"), "--data",
                          "synthetic", "--representative", "8", "--json"))
    assert len(res["levels"]) == 2 and Path(res["manifest"]).is_file()
    assert res["levels"][0]["macs"] < res["levels"][1]["macs"]


@pytest.mark.slow
def test_nest_json(tmp_path):
    res = _only_json(_cli("nest", *TINY, "--finetune-epochs", "1", "--score-batches", "1",
                          "--budgets", "0.5", "--out", str(tmp_path / "n"), "--json"))
    assert [lv["macs"] < res["levels"][-1]["macs"] for lv in res["levels"]] == [True, False]
    assert all(0 <= lv["accuracy"] <= 1 for lv in res["levels"])
    assert Path(res["family"]).is_file() and Path(res["metrics"]).is_file()


@pytest.mark.slow
def test_subspace_json(tmp_path):
    res = _only_json(_cli("subspace", *TINY, "--norm", "none", "--out", str(tmp_path / "s"),
                          "--json"))
    assert res["command"] == "subspace" and res["accuracy"]
    assert Path(res["report"]).is_file()


@pytest.mark.slow
def test_demo_json(tmp_path):
    res = _only_json(_cli("demo", "--quick", "--data", "digits", "--out", str(tmp_path / "d"),
                          "--json"))
    assert Path(res["report"]).is_file() and len(res["reds"]) == len(res["levels"]["reds"])


def test_json_error_is_one_object_and_one_stderr_line():
    r = _cli("info", "nope", "--json")
    assert r.returncode == 2
    error = json.loads(r.stdout)["error"]
    assert error.startswith("unknown model 'nope'")
    assert r.stderr.strip().splitlines() == [f"subnets info: error: {error}"]


# --- one-line errors ------------------------------------------------------------------------

BAD = {"info": ["dnn-s", "--width", "x"],
       "nest": ["--out", "o", "--epochs", "x"],
       "prune": ["--out", "o", "--method", "magic"],
       "subspace": ["--out", "o", "--lr", "fast"],
       "export": ["run", "--out", "o", "--eval", "1.5"],
       "demo": ["--seed", "zero"]}

BAD_AT_RUN = {"info": ["dnn-s", "--width", "2"],
              "subspace": ["--out", "o", "--warmup", "2"],
              "export": ["run", "--out", "o", "--representative", "0"]}


@pytest.mark.parametrize("cmd", COMMANDS)
def test_bad_flag_value_is_one_line(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, *BAD[cmd]])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"subnets {cmd}: error: argument --"), err


@pytest.mark.parametrize("cmd", sorted(BAD_AT_RUN))
def test_bad_value_checked_by_the_command_is_one_line(cmd, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    assert main([cmd, *BAD_AT_RUN[cmd]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"subnets {cmd}: error: "), err
    assert BAD_AT_RUN[cmd][-2] in err[0]  # names the flag


# --- --help shows defaults ------------------------------------------------------------------

@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_shows_defaults(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--config FILE" in text and "--json" in text
    expected = {"info": "(default: None)", "nest": "--batch-size BATCH_SIZE default: 128",
                "prune": "--method {imp,pai,reconvene} default: imp",
                "subspace": "(default: cpreresnet20)", "export": "(default: nano33ble)",
                "demo": "(default: runs/demo)"}[cmd]
    assert expected in text


# --- --config -------------------------------------------------------------------------------

def _info(capsys, *args: str) -> dict:
    assert main(["info", "dnn-s", *args]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


def test_config_toml_and_json_and_flags_override(tmp_path, capsys):
    full = _info(capsys, "--json")
    toml = tmp_path / "c.toml"
    toml.write_text('width = 0.5\njson = true\nnum-classes = 3\n')
    half = _info(capsys, "--config", str(toml))
    assert half["num_classes"] == 3 and half["macs"] < full["macs"]
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"width": 0.5, "json": True, "num_classes": 3}))
    assert _info(capsys, f"--config={js}") == half
    over = _info(capsys, "--config", str(toml), "--width", "1")
    assert over == _info(capsys, "--json", "--num-classes", "3") and over["macs"] > half["macs"]
    assert _info(capsys, "--config", str(toml), "--num-classes", "4")["num_classes"] == 4


def test_config_gives_required_options(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"out": str(tmp_path / "o")}))
    assert main(["export", str(tmp_path), "--config", str(cfg)]) == 2  # past parsing: --out set
    assert "family.subnets not found" in capsys.readouterr().err


@pytest.mark.parametrize("text, needle", [
    ("widht = 0.5\n", "unknown option 'widht'"),
    ("width = 'half'\n", "'width': invalid value 'half'"),
    ("norm = 'layer'\n", "'norm': invalid choice 'layer'"),
    ("json = 1\n", "'json' is a switch"),
    ("width = \n", "not a valid TOML file"),
    ("name = 'dnn-m'\n", "'name' is a positional argument"),
])
def test_config_errors_name_key_and_file(tmp_path, capsys, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert main(["info", "dnn-s", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and str(cfg) in err[0], err


def test_missing_config_file_is_named(tmp_path, capsys):
    assert main(["info", "dnn-s", "--config", str(tmp_path / "none.toml")]) == 2
    assert "none.toml" in capsys.readouterr().err


# --- missing extras -------------------------------------------------------------------------

def _one_line(capsys) -> str:
    """The error: stderr's last line and its only error line (log lines may come before)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len([ln for ln in err if ": error:" in ln]) == 1 and "Traceback" not in str(err), err
    return err[-1]


def test_missing_tensorflow_names_export_extra(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "e"), "--data", "synthetic",
                 "--representative", "4"]) == 2
    line = _one_line(capsys)
    assert line.startswith("subnets export: error:") and "'tensorflow'" in line
    assert "pip install 'subnets[export]'" in line


def test_missing_sklearn_names_data_extra(run_dir, tmp_path, capsys, monkeypatch):
    from subnets.data import loaders

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    if hasattr(loaders, "_CACHE"):
        monkeypatch.setattr(loaders, "_CACHE", {})
    assert main(["export", str(run_dir), "--out", str(tmp_path / "e"), "--data", "digits"]) == 2
    assert "pip install 'subnets[data]'" in _one_line(capsys)


# matplotlib (the plot extra): tests/test_plot_extra.py (PNG side products are skipped in one
# line; a command asked for a figure ends with one line naming the extra).


def test_config_lists_become_comma_lists_and_are_checked(tmp_path):
    from subnets.cli import build_parser
    from subnets.cli._output import config_tokens

    nest = build_parser()._commands["nest"]
    cfg = tmp_path / "c.toml"
    cfg.write_text('budgets = [0.25, "2e6macs"]\nout = "runs/x"\nquiet = true\n'
                   'references = false\n')
    tokens = config_tokens(nest, ["--config", str(cfg)])
    assert tokens == ["--budgets", "0.25,2e6macs", "--out", "runs/x", "--quiet"]
    args = nest.parse_args([*tokens, "--budgets", "0.5"])
    assert args.budgets == (0.5,) and args.out == "runs/x" and args.quiet
    cfg.write_text('budgets = [0.25, "lots"]\n')
    with pytest.raises(ValueError, match="'budgets': invalid value"):
        config_tokens(nest, ["--config", str(cfg)])


# --- export of a pruned level or of an LCS subspace at chosen widths ------------------------

def test_export_says_which_flag_a_prune_or_subspace_run_needs(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "portfolio.subnets").write_bytes(b"")
    (tmp_path / "s" / "subspace").mkdir(parents=True)
    assert main(["export", str(tmp_path / "p"), "--out", str(tmp_path / "o")]) == 2
    assert "pass --level N" in _one_line(capsys)
    assert main(["export", str(tmp_path / "s"), "--out", str(tmp_path / "o")]) == 2
    assert "pass --widths" in _one_line(capsys)
    assert main(["export", str(tmp_path / "p"), "--out", str(tmp_path / "o"), "--level", "3"]) == 2
    assert "level_3.subnets not found" in _one_line(capsys)
    assert main(["export", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--level", "1",
                 "--widths", "0.5"]) == 2
    assert "exclude each other" in _one_line(capsys)
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--widths", "0,1"])
    assert "--widths must be fractions in (0, 1]" in _one_line(capsys)


@pytest.mark.slow
def test_export_a_pruned_level_and_subspace_widths(tmp_path):
    pytest.importorskip("tensorflow")
    prune, lcs = tmp_path / "p", tmp_path / "s"
    _only_json(_cli("prune", *TINY, "--levels", "1", "--out", str(prune), "--json"))
    res = _only_json(_cli("export", str(prune), "--level", "1", "--out", str(tmp_path / "e1"),
                          "--representative", "8", "--eval", "256", "--json"))
    metrics = json.loads((prune / "metrics.json").read_text())
    assert len(res["levels"]) == 1 and res["levels"][0]["params"] > 0
    assert res["levels"][0]["params"] <= metrics["levels"][1]["params_before"]
    _only_json(_cli("subspace", *TINY, "--norm", "none", "--out", str(lcs), "--json"))
    res = _only_json(_cli("export", str(lcs), "--widths", "0.5,1", "--out", str(tmp_path / "e2"),
                          "--representative", "8", "--eval", "256", "--json"))
    report = json.loads((lcs / "report.json").read_text())
    assert [lv["eval"]["jax_float_accuracy"] for lv in res["levels"]] == \
        [report["accuracy"]["0.5"], report["accuracy"]["1.0"]]
    assert res["levels"][0]["macs"] < res["levels"][1]["macs"]
    r = _cli("export", str(lcs), "--widths", "0.05", "--out", str(tmp_path / "e3"))
    assert r.returncode == 2 and "outside the trained range" in r.stderr.splitlines()[-1]
