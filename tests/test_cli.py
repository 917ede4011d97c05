import json
import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "subnets", *args], capture_output=True,
                          text=True, timeout=300)


def test_help_lists_commands():
    r = _run("--help")
    assert r.returncode == 0
    for cmd in ("info", "demo"):
        assert cmd in r.stdout


def test_info_json():
    r = _run("info", "ds-cnn-s", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["model"] == "ds-cnn-s"
    assert report["macs"] > 2_000_000 and report["params"] > 20_000
    assert len([g for g in report["groups"] if not g["fixed"]]) == 5


def test_info_unknown_model_is_a_clear_error():
    r = _run("info", "resnet9")
    assert r.returncode == 2
    assert "unknown model 'resnet9'" in r.stderr


