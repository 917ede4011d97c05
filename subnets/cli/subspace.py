"""``subnets subspace``: train an LCS compressible subspace, checkpoint it, report accuracies.

Example:
    subnets subspace --model cpreresnet20 --data fashion_mnist --compression structured \\
        --kind point --out runs/lcs --epochs 2 --limit 5000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "subspace", help="train an LCS compressible subspace (point or line)",
        description="Train one network whose compression level (width, TopK density or bits) "
                    "can be chosen after training, without recalibration (LCS, "
                    "arXiv:2110.04252). Checkpoints every epoch to OUT/checkpoint and resumes "
                    "from it; writes OUT/subspace and OUT/report.json.")
    p.add_argument("--model", default="cpreresnet20", help="zoo model (default cpreresnet20)")
    p.add_argument("--data", default="fashion_mnist", help="data set (default fashion_mnist)")
    p.add_argument("--compression", default="structured",
                   choices=["structured", "unstructured", "quantized"])
    p.add_argument("--kind", default="point", choices=["point", "line"])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--norm", default=None, choices=["instance", "group", "batch", "none"],
                   help="default: instance (structured) or group (otherwise), as in LCS")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training (and N test) examples")
    p.add_argument("--lr", type=float, default=None,
                   help="peak SGD learning rate (default 0.1; 0.025 when quantized)")
    p.add_argument("--lr-warmup-epochs", type=int, default=0,
                   help="epochs of linear learning-rate warm-up (the reference uses 5 of 200)")
    p.add_argument("--warmup", type=float, default=0.8,
                   help="fraction of steps in the compression warm-up (default 0.8)")
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
                   help="start afresh even if OUT/checkpoint exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from subnets import parallel

    parallel.add_flags(p)
    return p


def run(args) -> int:
    import shutil

    from subnets import parallel

    mesh = parallel.mesh_from_flags(args)  # before any other JAX work (jax.distributed)

    import jax

    from subnets import subspace, zoo
    from subnets.data.train_test import load_train_test
    from subnets.subspace.sliced import choose_step

    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.limit is not None and args.limit < args.batch_size:
        raise ValueError(f"--limit {args.limit} is smaller than --batch-size {args.batch_size}")
    (x, y), (xt, yt) = load_train_test(args.data, limit=args.limit)
    norm = args.norm or ("instance" if args.compression == "structured" else "group")
    classes = int(max(y.max(), yt.max())) + 1
    net = zoo.create(args.model, num_classes=classes, input_shape=x.shape[1:], norm=norm)
    out = Path(args.out)
    ck = out / "checkpoint"
    if args.no_resume and ck.exists():
        shutil.rmtree(ck)
    key = jax.random.key(args.seed)
    init_key, train_key = jax.random.split(key)
    init = subspace.init_line if args.kind == "line" else subspace.init_point
    s = init(net, key=init_key, compression=args.compression)
    cfg = subspace.default_config(args.compression)
    cfg = subspace.LCSConfig(cfg.samples, cfg.sampling, beta=args.beta, warmup=args.warmup,
                             levels=args.levels, step=args.step)
    lr = args.lr if args.lr is not None else (0.025 if args.compression == "quantized" else 0.1)
    s = subspace.fit(net, s, x, y, epochs=args.epochs, batch_size=args.batch_size,
                     key=train_key, config=cfg, lr=lr, warmup_epochs=args.lr_warmup_epochs,
                     checkpoint_dir=ck, mesh=mesh,
                     progress=not args.quiet, desc=f"lcs {args.compression} {args.kind}")
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
    (out / "report.json").write_text(json.dumps(report, indent=1))
    label = {"structured": "width", "unstructured": "density", "quantized": "bits"}
    print(f"LCS+{args.kind[0].upper()} {args.compression} {args.model} on {args.data} "
          f"({len(x)} train, {len(xt)} test, {args.epochs} epochs) -> {out}")
    for level, a in acc.items():
        print(f"  {label[args.compression]} {level:<6} accuracy {a:.4f}")
    sys.stdout.flush()
    return 0
