"""Every docstring example in the package runs and gives what it shows.

Modules are discovered, not listed, so a new module's example is tested from its first commit.
The export modules convert models through TensorFlow (tens of seconds each): they are marked slow.
"""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import subnets

SLOW = {"subnets.export", "subnets.export.family", "subnets.export.convert", "subnets.export.tflm"}


def _modules() -> list[str]:
    names = ["subnets"]
    for info in pkgutil.walk_packages(subnets.__path__, "subnets."):
        if ".cli" in info.name or info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return sorted(names)


def _has_examples(name: str) -> bool:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    return any(t.examples for t in finder.find(module, name))


MODULES = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
           for n in _modules() if _has_examples(n)]


def test_every_public_module_has_an_example():
    # DESIGN.md: docstrings carry a runnable example. Private helpers (_name) may go without.
    missing = [n for n in _modules()
               if not n.rsplit(".", 1)[-1].startswith("_") and not _has_examples(n)]
    assert not missing, f"modules without a docstring example: {missing}"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    # importlib, not attribute access: packages re-export functions under their module's name
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def _markdown_programs() -> dict[str, str]:
    """Per markdown file, its ``python`` blocks joined: a tutorial's blocks share one namespace."""
    root = Path(__file__).resolve().parents[1]
    out = {}
    for md in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        blocks = re.findall(r"```python\n(.*?)```", md.read_text(), re.S)
        if blocks:
            out[md.name] = "\n".join(blocks)
    return out


# Pages whose code converts models through TensorFlow (tens of seconds each).
SLOW_DOCS = {"own-model.md"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_DOCS
                                  else n for n in sorted(_markdown_programs())])
def test_markdown_python_blocks_run(name, capsys):
    # the README's and docs' code runs as written: a renamed function breaks this test
    exec(compile(_markdown_programs()[name], name, "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out, f"{name}'s code printed nothing"


def test_markdown_has_python_blocks():
    assert {"README.md", "tutorial.md", "own-model.md"} <= set(_markdown_programs())
