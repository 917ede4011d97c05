"""What ``subnets export RUN_DIR`` exports: a REDS family, one pruned level, or an LCS subspace.

- ``subnets nest --out`` folders hold ``family.subnets``: every level is exported.
- ``subnets prune --out`` folders: ``--level N`` exports the removed model ``level_N.subnets``
  (a family of one level).
- ``subnets subspace --out`` folders (structured point subspaces): ``--widths 0.25,0.5,1``
  exports those widths, which may lie anywhere in the trained range; a point subspace's widths
  share their leading channels, so they form one nested family.

References:
    Corti et al., REDS (arXiv:2311.13349); Nunez et al., LCS (arXiv:2110.04252).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def widths_arg(text: str) -> tuple[float, ...]:
    """``--widths``: comma-separated fractions in (0, 1]."""
    import argparse

    try:
        out = tuple(sorted(float(t) for t in text.split(",") if t.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--widths wants comma-separated fractions, got "
                                         f"{text!r}") from None
    if not out or not all(0 < w <= 1 for w in out):
        raise argparse.ArgumentTypeError(f"--widths must be fractions in (0, 1], got {text!r}")
    return out


def load_source(run_dir: Path, level: int | None, widths: tuple[float, ...] | None) -> Any:
    """The :class:`~subnets.runtime.family.Family` to export from ``run_dir``."""
    from subnets.runtime.family import Family

    if level is not None and widths is not None:
        raise ValueError("--level (a prune run) and --widths (a subspace run) exclude each other")
    if level is not None:
        path = run_dir / f"level_{level}.subnets"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: --level needs a `subnets prune --out` "
                                    "directory and one of its levels")
        from subnets.pruning.pipeline import load_level

        net, variables, _ = load_level(path)
        return Family(net, variables, [net.graph.widths_of(variables)])
    if widths is not None:
        return _subspace_family(run_dir, widths)
    path = run_dir / "family.subnets"
    if path.is_file():
        return Family.load(path)
    if (run_dir / "portfolio.subnets").is_file():
        raise ValueError(f"{run_dir} is a `subnets prune` run: pass --level N (0 = dense)")
    if (run_dir / "subspace").is_dir():
        raise ValueError(f"{run_dir} is a `subnets subspace` run: pass --widths, e.g. 0.5,1")
    raise FileNotFoundError(f"{path} not found: RUN_DIR must be a `subnets nest --out` "
                            "directory (or a prune run with --level, a subspace run with "
                            "--widths)")


def _subspace_family(run_dir: Path, widths: tuple[float, ...]) -> Any:
    from subnets import subspace, zoo
    from subnets.io import read_json
    from subnets.runtime.family import Family
    from subnets.subspace import channel_counts

    folder = run_dir / "subspace"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: --widths needs a `subnets subspace --out` "
                                "directory")
    s, meta = subspace.load(folder)
    if s.compression != "structured" or s.end:
        raise ValueError(f"{folder}: only a structured point subspace exports at chosen widths "
                         f"(this one is {s.compression}{', a line' if s.end else ''})")
    report = read_json(run_dir / "report.json") if (run_dir / "report.json").is_file() else {}
    info = {**report, **meta}
    net = zoo.create(info["model"], num_classes=info["num_classes"],
                     input_shape=tuple(info["input_shape"]), norm=info.get("norm"))
    for w in widths:  # refuses widths outside the trained range, naming them
        subspace.at_level(s, net, width=w)
    variables = subspace.at_level(s, net, width=1.0, out_of_range="allow")
    return Family(net, variables, [channel_counts(net.graph, w) for w in widths])
