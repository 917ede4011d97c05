"""``subnets export RUN_DIR --board nano33ble --out DIR``: int8 TFLite + C arrays per level.

RUN_DIR is what ``subnets nest --out DIR`` wrote: ``family.subnets`` (the family) and
``metrics.json`` (which names the data set). Calibration inputs come from the data set's training
split, evaluation from its test split; ``--data synthetic`` calibrates on uniform noise and skips
evaluation (for inputs with no offline data set, such as Speech Commands). ``--formats nested-c``
writes one int8 C99 artifact (calibrated the same way) whose levels share their weights;
with ``--float`` a float32 one that needs no data. A ``subnets prune`` RUN_DIR exports one removed
level with ``--level N``; a ``subnets subspace`` RUN_DIR (structured point) exports chosen widths
with ``--widths 0.25,0.5,1`` (see :mod:`subnets.cli._sources`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from subnets.cli._output import result
from subnets.cli._sources import load_source, widths_arg


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export a family's levels to int8 TFLite / TFLite-Micro",
                       description="Convert every level of a trained family to a full-int8 "
                                   "TFLite model, check it in the TFLite-Micro interpreter, "
                                   "write C arrays and manifest.json, and check board budgets.")
    p.add_argument("run_dir", help="directory written by `subnets nest --out` (or by prune "
                                   "with --level, by subspace with --widths)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--board", default="nano33ble",
                   help="nano33ble (1 MB flash, 256 KB RAM), pico (2 MB, 264 KB) or custom "
                        "(with --flash-kb and --ram-kb)")
    p.add_argument("--flash-kb", type=float, default=None, help="custom board flash, KiB")
    p.add_argument("--ram-kb", type=float, default=None, help="custom board RAM, KiB")
    p.add_argument("--data", default=None,
                   help="data set for calibration/evaluation (default: from metrics.json); "
                        "'synthetic' = uniform noise, no evaluation")
    p.add_argument("--representative", type=int, default=300,
                   help="training inputs used to calibrate int8 ranges")
    p.add_argument("--eval", type=int, default=1000, help="test samples evaluated per level")
    p.add_argument("--float", action="store_true", help="float32 models instead of int8")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--level", type=int, default=None,
                   help="a `subnets prune` RUN_DIR: export its removed model level_N")
    p.add_argument("--widths", type=widths_arg, default=None,
                   help="a `subnets subspace` RUN_DIR (structured point): export these "
                        "comma-separated widths, e.g. 0.25,0.5,1")
    p.add_argument("--formats", default="tflite",
                   help="comma list of tflite (an int8 .tflite + C array per level, checked in "
                        "TFLM) and nested-c (ONE C99 source whose levels share their weights, "
                        "in OUT/nested_c/: int8 calibrated on the run's data set, float32 "
                        "with --float)")
    return p


def _board(args) -> Any:
    from subnets.export import Board, get_board

    if args.flash_kb is not None or args.ram_kb is not None or args.board == "custom":
        if args.flash_kb is None or args.ram_kb is None:
            raise ValueError("a custom board needs both --flash-kb and --ram-kb")
        return Board(args.board, int(args.flash_kb * 1024), int(args.ram_kb * 1024))
    return get_board(args.board)


def _dataset_name(args, run_dir: Path) -> str:
    metrics = run_dir / "metrics.json"
    if not metrics.is_file() and (run_dir / "report.json").is_file():
        metrics = run_dir / "report.json"  # a `subnets subspace` run
    recorded = None
    if metrics.is_file():
        from subnets.io import read_json

        meta = read_json(metrics)
        meta = {**meta.get("config", {}), **meta} if isinstance(meta.get("config"), dict) else meta
        recorded = next((meta[k] for k in ("data", "dataset") if isinstance(meta.get(k), str)),
                        None)
    if args.data:
        if recorded and args.data not in (recorded, "synthetic"):
            raise ValueError(f"--data {args.data!r} is not the data set the run was trained on "
                             f"({recorded!r}, recorded in {metrics}); pass --data {recorded} "
                             "(or --data synthetic)")
        return args.data
    if recorded:
        return recorded
    raise ValueError(f"{metrics} names no data set ('data' key); pass --data NAME "
                     "(or --data synthetic)")


def _data(name: str, net: Any, n_rep: int, n_eval: int) -> tuple[np.ndarray, Any]:
    shape = tuple(net.input_shape)
    if name == "synthetic":
        rng = np.random.default_rng(0)
        return rng.random((n_rep,) + shape, dtype=np.float32), None
    from subnets import data

    x, _ = data.load(name, "train")
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"data set {name!r} has inputs {tuple(x.shape[1:])}, the family's "
                         f"net {getattr(net, 'name', '')} takes {shape}")
    rep = x[np.random.default_rng(0).choice(len(x), min(n_rep, len(x)), replace=False)]
    xt, yt = data.load(name, "test")
    return rep, (xt[:n_eval], yt[:n_eval])


def _nested_c(family, out: Path, board, rep, int8: bool = True) -> bool:
    """Write the nested C artifact (int8 from ``rep``, or float32), check that it fits."""
    from subnets.export import nested_c
    from subnets.export.reserve import check

    m = nested_c(family, out, representative=rep, int8=int8)
    stored = m["weight_bytes"] + m.get("table_bytes", m.get("affine_bytes", 0))
    print(f"nested C artifact ({'int8' if int8 else 'float32'}) -> {out} ({len(m['levels'])} "
          f"levels share {stored:,} B of weights; arena {m['arena_bytes']:,} B)")
    fit = check(board, "nested-c", stored, m["arena_bytes"])
    print(f"  board {board.name}: reserved {fit['reserved']['flash_bytes']:,} B flash / "
          f"{fit['reserved']['ram_bytes']:,} B RAM (runtime, stack, OS); margin "
          f"{fit['flash_margin']:,} B flash, {fit['ram_margin']:,} B RAM")
    for problem in fit["problems"]:
        print(f"  DOES NOT FIT: {problem}")
    return fit["fits"]


def run(args) -> int:
    from subnets.export import export_family

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"RUN_DIR {run_dir} is not a directory")
    if args.representative < 1:
        raise ValueError(f"--representative must be >= 1, got {args.representative}")
    formats = {f.strip() for f in args.formats.split(",") if f.strip()}
    unknown = sorted(formats - {"tflite", "nested-c"})
    if unknown or not formats:
        raise ValueError(f"--formats takes tflite and/or nested-c, got {args.formats!r}")
    board = _board(args)
    family = load_source(run_dir, args.level, args.widths)
    rep = eval_data = None
    if "tflite" in formats or not args.float:  # int8 calibrates on the run's data set
        rep, eval_data = _data(_dataset_name(args, run_dir), family.net, args.representative,
                               args.eval)
    summary: dict[str, Any] = {"command": "export", "out": str(args.out), "board": board.name,
                               "formats": sorted(formats), "int8": not args.float}
    result(args, summary)
    if "nested-c" in formats:
        fits = _nested_c(family, Path(args.out) / "nested_c", board, rep, not args.float)
        summary["nested_c"] = {"dir": str(Path(args.out) / "nested_c"), "fits": fits}
        summary["fits"] = fits
        if not fits:
            return 1
    if "tflite" not in formats:
        return 0
    manifest = export_family(family, args.out, representative=rep, board=board,
                             eval_data=eval_data, int8=not args.float,
                             progress=None if not args.quiet else False)
    print(f"{manifest['model']} -> {args.out} ({len(manifest['levels'])} levels, board "
          f"{board.name}: {board.flash_bytes:,} B flash, {board.ram_bytes:,} B RAM)")
    print(f"  {'level':>5}{'MACs':>12}{'params':>9}{'flash B':>10}{'arena B':>10}"
          f"{'float':>8}{'tflm':>8}{'agree':>8}  fits")
    for e in manifest["levels"]:
        ev = e.get("eval")
        accs = (f"{ev['jax_float_accuracy']:>8.4f}{ev['tflm_accuracy']:>8.4f}"
                f"{ev['top1_agreement']:>8.4f}" if ev else f"{'-':>8}{'-':>8}{'-':>8}")
        print(f"  {e['level']:>5}{e['macs']:>12,}{e['params']:>9,}{e['flash_bytes']:>10,}"
              f"{e['arena_bytes']:>10,}{accs}  {'yes' if e['fits'] else 'NO'}")
    for problem in manifest["problems"] + manifest["all_levels_problems"]:
        print(f"  does not fit: {problem}")
    if eval_data is None:
        print("  (no evaluation: calibrated on synthetic inputs)")
    keys = ("level", "macs", "params", "flash_bytes", "arena_bytes", "fits", "eval")
    summary.update(manifest=str(Path(args.out) / "manifest.json"),
                   fits=bool(manifest["fits"] and summary.get("fits", True)),
                   levels=[{k: e.get(k) for k in keys} for e in manifest["levels"]],
                   problems=list(manifest["problems"] + manifest["all_levels_problems"]))
    return 0 if manifest["fits"] else 1
