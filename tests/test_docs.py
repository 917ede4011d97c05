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
    """Per markdown file, its ``python`` blocks joined: a tutorial's blocks share one namespace.

    Keys are paths relative to ``docs/`` (``README.md`` for the README): ``tutorial.md``,
    ``tutorials/lcs.md``.
    """
    root = Path(__file__).resolve().parents[1]
    docs = root / "docs"
    out = {}
    pages = [root / "README.md", *sorted(docs.glob("*.md")), *sorted(docs.glob("tutorials/*.md"))]
    for md in pages:
        blocks = re.findall(r"```python\n(.*?)```", md.read_text(), re.S)
        if blocks:
            out[md.name if md.parent == root else str(md.relative_to(docs))] = "\n".join(blocks)
    return out


# A page that reads this variable has a smoke variant (tiny data and epochs): the default run
# executes that, `pytest -m slow` the page as a reader runs it.
QUICK_ENV = "SUBNETS_DOCS_QUICK"
# Pages whose code converts models through TensorFlow or trains for minutes, even as a smoke
# run (measured: tests/test_docs.py --durations; see docs/tutorials/README.md).
SLOW_DOCS = {"own-model.md", "tutorials/export_board.md", "tutorials/reds_kws.md"}
TUTORIALS = {"tutorials/reds_kws.md", "tutorials/lcs.md", "tutorials/export_board.md"}


def _cases() -> list:
    cases = []
    for name, program in sorted(_markdown_programs().items()):
        if QUICK_ENV in program:
            marks = [pytest.mark.slow] if name in SLOW_DOCS else []
            cases.append(pytest.param(name, True, marks=marks, id=f"{name}-smoke"))
            cases.append(pytest.param(name, False, marks=pytest.mark.slow, id=f"{name}-full"))
        else:
            marks = [pytest.mark.slow] if name in SLOW_DOCS else []
            cases.append(pytest.param(name, False, marks=marks, id=name))
    return cases


@pytest.mark.parametrize(("name", "quick"), _cases())
def test_markdown_python_blocks_run(name, quick, capsys, monkeypatch, tmp_path):
    # the README's and docs' code runs as written: a renamed function breaks this test
    if quick:
        monkeypatch.setenv(QUICK_ENV, "1")
    else:
        monkeypatch.delenv(QUICK_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # whatever a page writes into "." stays out of the checkout
    exec(compile(_markdown_programs()[name], name, "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out, f"{name}'s code printed nothing"


def test_markdown_has_python_blocks():
    assert {"README.md", "tutorial.md", "own-model.md", *TUTORIALS} <= set(_markdown_programs())


def test_every_tutorial_has_a_smoke_variant_and_is_indexed():
    # each tutorial runs small in some test run, and the index links every tutorial page
    programs = _markdown_programs()
    for name in TUTORIALS:
        assert QUICK_ENV in programs[name], name
    root = Path(__file__).resolve().parents[1] / "docs"
    index = (root / "tutorials" / "README.md").read_text()
    pages = [p.name for p in (root / "tutorials").glob("*.md") if p.name != "README.md"]
    missing = [p for p in [*pages, "../tutorial.md", "../own-model.md"] if f"({p})" not in index]
    assert not missing, f"docs/tutorials/README.md does not link {missing}"
