"""``subnets demo``: the embedded default job, runnable on a fresh clone with no flags.

For now it trains a zoo model briefly on the default offline data set (Fashion-MNIST from the
Debian IDX files) and prints accuracy, parameters and MACs at full and half width.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from subnets.cli._run import add_run_flags, open_run


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="train a zoo model briefly on offline data and report it",
                       description="Train a zoo model briefly on an offline data set and print "
                                   "its accuracy, parameters and MACs.")
    p.add_argument("--model", default="vision-ds-cnn")
    p.add_argument("--data", default="fashion_mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--limit", type=int, default=20000, help="training examples used (0 = all)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument("--out", default=None,
                   help="run folder: checkpoint every epoch to OUT/checkpoint (a rerun "
                        "resumes), write OUT/report.json and OUT/manifest.json")
    add_run_flags(p)
    return p


def run(args) -> int:
    if args.out is None:
        if args.force or args.resume:
            raise ValueError("--force and --resume need --out")
        return _run(args, None)
    with open_run(args, "demo") as run:
        return _run(args, run)


def _run(args, run) -> int:
    import jax

    from subnets import cost, data, train, zoo
    from subnets.data.train_test import load_train_test
    from subnets.io import write_json
    from subnets.runs import fingerprint

    (x, y), (xt, yt) = load_train_test(args.data, limit=args.limit or None, test_limit=None,
                                       data_dir=args.data_dir)
    ck = None
    if run is not None:
        run.check_data(fingerprint(x, y, xt, yt))
        ck = Path(args.out) / "checkpoint"
        run.saved = f"the training state after each finished epoch ({ck})"
    spec = data.DATASETS[args.data]
    net = zoo.create(args.model, num_classes=spec.num_classes, input_shape=x.shape[1:])
    key = jax.random.key(args.seed)
    t0 = time.perf_counter()
    variables = train.fit(net, net.init(key), x, y, epochs=args.epochs,
                          batch_size=args.batch_size, key=jax.random.fold_in(key, 1),
                          progress=not args.json, checkpoint_dir=ck)
    seconds = time.perf_counter() - t0
    acc = train.evaluate(net, variables, xt, yt)
    report = {"model": net.name, "data": args.data, "train_examples": len(x),
              "epochs": args.epochs, "train_seconds": round(seconds, 1),
              "test_accuracy": round(acc, 4), "params": cost.params(net),
              "macs": cost.macs(net)}
    if run is not None:
        write_json(Path(args.out) / "report.json", report, nonfinite="null")
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{net.name} on {args.data}: test accuracy {acc:.4f} after {args.epochs} epoch(s) "
              f"on {len(x)} examples ({seconds:.0f} s)")
        print(f"  parameters {report['params']:,}   MACs/example {report['macs']:,}")
    return 0
