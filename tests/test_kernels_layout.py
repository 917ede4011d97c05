"""The top-level kernels/ folder imports as subnets.kernels in all three ways it is installed.

* a source checkout (pytest's ``pythonpath = ["."]``): ``subnets/kernels.py`` loads ``kernels/``;
* an editable install: setuptools' finder maps ``subnets`` to the source folder, so the same
  shim acts (simulated here with an equivalent meta-path finder, from a neutral directory);
* a built wheel: the ``package-dir`` mapping installs ``kernels/`` as ``subnets/kernels/``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Importing the kernels compiles nothing (Numba compiles on first call), so this stays quick;
# the kernels' behaviour is tested in test_knapsack_kernel.py and test_select_graph.py.
PROBE = ("import subnets.kernels.knapsack as kk; "
         "from subnets.kernels.knapsack import decompose; "
         "print(kk.__file__); print(len(decompose([[0, 1], [1, 2]], [2, 2, 2])[0]))")


def _run(code: str, cwd: Path, env_path: str | None = None) -> list[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "JAX_PLATFORMS": "cpu"}
    if env_path:
        env["PYTHONPATH"] = env_path
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


def test_source_checkout(tmp_path):
    out = _run(PROBE, tmp_path, str(ROOT))
    assert Path(out[0]) == ROOT / "kernels" / "knapsack" / "__init__.py"
    assert out[1] == "3"


def test_editable_style_finder(tmp_path):
    finder = (
        "import importlib.util, sys\n"
        "class F:\n"
        "    @classmethod\n"
        "    def find_spec(cls, name, path=None, target=None):\n"
        "        if name == 'subnets':\n"
        f"            return importlib.util.spec_from_file_location(name, {str(ROOT)!r} + "
        "'/subnets/__init__.py', submodule_search_locations=[" f"{str(ROOT)!r}" " + '/subnets'])\n"
        "sys.meta_path.insert(0, F)\n")
    out = _run(finder + PROBE.replace("; ", "\n"), tmp_path)
    assert Path(out[0]) == ROOT / "kernels" / "knapsack" / "__init__.py"
    assert out[1] == "3"


@pytest.mark.slow  # builds a wheel in an isolated environment (~10-40 s)
def test_wheel_holds_kernels_as_subnets_kernels(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("subnets", "kernels"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    wheels = tmp_path / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(wheels), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = wheels.glob("subnets-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "subnets/kernels/__init__.py" in names
    assert "subnets/kernels/knapsack/graph.py" in names
    assert not any(n.startswith("kernels/") for n in names)  # no top-level "kernels" package
    site = tmp_path / "site"
    zipfile.ZipFile(whl).extractall(site)
    out = _run(PROBE, tmp_path, str(site))
    assert Path(out[0]) == site / "subnets" / "kernels" / "knapsack" / "__init__.py"
    assert out[1] == "3"
