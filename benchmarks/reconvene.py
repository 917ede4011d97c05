"""Reconvene vs unstructured PaI vs structured PaI: size, CPU speed, accuracy at several densities.

Each method starts from the same initialisation, prunes at init at the same density, trains
once with the same budget, and is then made physically small (exact dead-structure removal for
the sparse models; structured PaI is small already):

- ``unstructured``: PaI masks, masked training (stored dense: few channels die at init);
- ``structured``: every group narrowed by one factor so the kernels hold ``density`` of their
  weights, Kaiming-initialised, dense training;
- ``reconvene``: PaI, resilient layers rectified into narrower dense layers, the rest masked.

Usage:
    python benchmarks/reconvene.py --quick
    python benchmarks/reconvene.py --models ds-cnn-s,cpreresnet20 --densities 0.1,0.05 \\
        --epochs 1 --limit 3000 --out reconvene.png
    python benchmarks/reconvene.py --sweep --models dnn-s --data mnist5k --epochs 10 \\
        --densities 0.2,0.1,0.05 --seeds 3 --out reconvene_sweep.png

``--sweep`` measures layer collapse instead of speed: accuracy vs density of unstructured PaI
and Reconvene for every criterion, with and without the per-layer floor
(:mod:`subnets.pruning.scoring`), over ``--seeds`` seeds (mean and standard deviation).

The last stdout line is one JSON object.

References:
    Eccles et al., Reconvene (arXiv:2404.16877): up to 16.21x smaller and 2x faster with the
    accuracy of the unstructured PaI counterpart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from subnets import train, zoo  # noqa: E402
from subnets._plot import side_plot  # noqa: E402
from subnets.data import announce
from subnets.pruning.masked import (  # noqa: E402
    apply_masks,
    masked_optimizer,  # noqa: E402
)
from subnets.pruning.pai import METHODS as CRITERIA  # noqa: E402
from subnets.pruning.pai import prune_at_init  # noqa: E402
from subnets.pruning.pipeline import level_metrics  # noqa: E402
from subnets.pruning.reconvene import (  # noqa: E402
    default_prunable,
    reconvene,
    structured_init,
)
from subnets.pruning.scoring import DEFAULT_FLOOR, collapse_report  # noqa: E402

METHODS = ("unstructured", "structured", "reconvene")


from benchmarks._common import add_run_flags, load_limited  # noqa: E402
from benchmarks._timing import latency_ms  # noqa: E402


def _count(tree) -> int:
    return int(sum(np.size(a) for a in jax.tree.leaves(tree)))


def one(method, net, v0, x, y, xt, yt, density, score, args, key) -> dict:
    k_prune, k_train = jax.random.split(key)
    steps = args.epochs * max(1, len(x) // args.batch_size)
    t0 = time.perf_counter()
    masks = {}
    if method == "structured":
        start, _ = structured_init(net, density=density, key=k_prune)
    elif method == "unstructured":
        masks = prune_at_init(net, v0, x[: args.batch_size], y[: args.batch_size],
                              density=density, method=score, key=k_prune,
                              prunable=default_prunable(net))
        start = apply_masks(v0, masks)
    else:
        r = reconvene(net, v0, x[: args.batch_size], y[: args.batch_size], density=density,
                      method=score, key=k_prune)
        start, masks = r.variables, r.masks
    prune_s = time.perf_counter() - t0
    tx = masked_optimizer(train.default_optimizer(steps, args.lr), masks)
    trained = train.fit(net, start, x, y, epochs=args.epochs, batch_size=args.batch_size,
                        tx=tx, key=k_train, progress=sys.stderr.isatty(),
                        desc=f"{net.name} {method} d={density:g}")
    m, removed, _ = level_metrics(net, trained, masks, xt, yt)
    m.pop("widths")
    m.update(method=method, target_density=density, prune_seconds=prune_s,
             params_full=_count(v0["params"]))
    m["compression_nonzero"] = m["params_full"] / m["params_nonzero"]
    m["compression_stored"] = m["params_full"] / m["params_after"]
    for b in (1, 64):
        m[f"latency_b{b}_ms"] = latency_ms(net, removed, b, args.repeats)
    return m


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="ds-cnn-s,cpreresnet20")
    p.add_argument("--data", default="default")
    p.add_argument("--densities", default="0.1,0.05")
    p.add_argument("--score", default="magnitude", help="PaI score (the paper's)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--sweep", action="store_true",
                   help="accuracy vs density per criterion, with and without the floor")
    p.add_argument("--criteria", default=",".join(c for c in CRITERIA if c != "taylor"),
                   help="--sweep: comma list of PaI criteria")
    p.add_argument("--seeds", type=int, default=3, help="--sweep: seeds per point")
    add_run_flags(p, limit=3000, repeats=20)
    args = p.parse_args(argv)
    args.data = announce(args.data)
    if args.sweep:
        return sweep(args)
    if args.quick:
        args.models, args.data, args.densities = "dnn-s", "digits", "0.1"
        args.limit, args.repeats, args.batch_size, args.lr = 384, 3, 64, 1e-2
    t_start = time.perf_counter()
    x, y, xt, yt, classes = load_limited(args.data, args.limit)
    rows = []
    for mi, model in enumerate(args.models.split(",")):
        net = zoo.create(model, num_classes=classes, input_shape=x.shape[1:])
        v0 = net.init(jax.random.key(args.seed + mi))
        dense_b64 = latency_ms(net, v0, 64, args.repeats)
        for density in (float(d) for d in args.densities.split(",")):
            for method in METHODS:
                key = jax.random.key(args.seed + 1)
                row = one(method, net, v0, x, y, xt, yt, density, args.score, args, key)
                row.update(model=model, latency_dense_b64_ms=dense_b64)
                rows.append(row)
    summary = {}
    for r in rows:
        if r["method"] == "reconvene":
            same = {q["method"]: q for q in rows
                    if q["model"] == r["model"] and q["target_density"] == r["target_density"]}
            u = same["unstructured"]
            summary[f"{r['model']}@{r['target_density']:g}"] = {
                "size_vs_unstructured_stored": u["params_after"] / r["params_after"],
                "speedup_b64_vs_unstructured": u["latency_b64_ms"] / r["latency_b64_ms"],
                "accuracy_delta_vs_unstructured": r["accuracy_removed"] - u["accuracy_removed"],
                "accuracy_delta_vs_structured": r["accuracy_removed"]
                - same["structured"]["accuracy_removed"]}
    result = {"benchmark": "reconvene", "data": args.data, "score": args.score,
              "quick": args.quick, "epochs": args.epochs, "train_examples": len(x),
              "rows": rows, "summary": summary, "seconds": time.perf_counter() - t_start}
    if args.out:
        result["png"] = side_plot(lambda p: _plot(rows, p), args.out)
    print(json.dumps(result))
    return result


def _sweep_one(method, net, x, y, xt, yt, density, crit, guard, args, seed) -> dict:
    import warnings

    k_init, k_prune, k_train = jax.random.split(jax.random.key(seed), 3)
    v0 = net.init(k_init)
    floor = DEFAULT_FLOOR if guard else None
    xs, ys = x[: args.batch_size], y[: args.batch_size]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # counted below instead
        if method == "pai":
            masks = prune_at_init(net, v0, xs, ys, density=density, method=crit, key=k_prune,
                                  prunable=default_prunable(net), floor=floor)
            start, widths = apply_masks(v0, masks), {}
            collapsed = collapse_report(masks, density)
        else:
            r = reconvene(net, v0, xs, ys, density=density, method=crit, key=k_prune,
                          floor=floor)
            start, masks, widths = r.variables, r.masks, r.widths
            collapsed = [n for n, row in r.report["layers"].items()
                         if row["density"] < 0.1 * density]
    steps = args.epochs * max(1, len(x) // args.batch_size)
    tx = masked_optimizer(train.default_optimizer(steps, args.lr), masks)
    trained = train.fit(net, start, x, y, epochs=args.epochs, batch_size=args.batch_size,
                        tx=tx, key=k_train, progress=False)
    return {"method": method, "criterion": crit, "guard": guard, "density": density,
            "seed": seed, "accuracy": train.evaluate(net, trained, xt, yt),
            "collapsed_layers": len(collapsed),
            "min_width": min(widths.values()) if widths else None}


def sweep(args) -> dict:
    """Accuracy vs density for every criterion, floor on/off, several seeds."""
    if args.quick:
        args.models, args.data, args.densities, args.seeds = "dnn-s", "digits", "0.05", 1
        args.limit, args.batch_size, args.lr, args.criteria = 384, 64, 1e-2, "magnitude,synflow"
    t_start = time.perf_counter()
    x, y, xt, yt, classes = load_limited(args.data, args.limit)
    rows = []
    crits = [c.strip() for c in args.criteria.split(",") if c.strip()]
    for model in args.models.split(","):
        net = zoo.create(model, num_classes=classes, input_shape=x.shape[1:])
        for density in (float(d) for d in args.densities.split(",")):
            for method in ("pai", "reconvene"):
                for crit in crits:
                    for guard in (True, False):
                        for seed in range(args.seeds):
                            r = _sweep_one(method, net, x, y, xt, yt, density, crit, guard,
                                           args, args.seed + seed)
                            r["model"] = model
                            rows.append(r)
                        print(f"{model} {method} {crit} guard={guard} d={density:g}: "
                              f"{[round(q['accuracy'], 3) for q in rows[-args.seeds:]]}",
                              file=sys.stderr, flush=True)
    summary = {}
    for r in rows:
        key = f"{r['model']}|{r['method']}|{r['criterion']}|{'floor' if r['guard'] else 'none'}" \
              f"|{r['density']:g}"
        summary.setdefault(key, []).append(r["accuracy"])
    summary = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
               for k, v in summary.items()}
    result = {"benchmark": "reconvene_sweep", "data": args.data, "quick": args.quick,
              "epochs": args.epochs, "train_examples": len(x), "test_examples": len(xt),
              "seeds": args.seeds, "rows": rows, "summary": summary,
              "seconds": time.perf_counter() - t_start}
    if args.out:
        result["png"] = side_plot(lambda p: _plot_sweep(rows, p), args.out)
    print(json.dumps(result))
    return result


def _plot_sweep(rows, path):
    from subnets._plot import panels

    methods = ("pai", "reconvene")
    crits = sorted({r["criterion"] for r in rows})
    with panels(path, 1, 2, figsize=(11, 4), dpi=100,
                title="accuracy vs density: solid = per-layer floor, dashed = none") as axes:
        for ax, method in zip(axes[0], methods, strict=True):
            for ci, crit in enumerate(crits):
                for guard, ls in ((True, "-"), (False, "--")):
                    rs = [r for r in rows if r["method"] == method and r["criterion"] == crit
                          and r["guard"] == guard]
                    ds = sorted({r["density"] for r in rs})
                    acc = [[100 * r["accuracy"] for r in rs if r["density"] == d] for d in ds]
                    ax.errorbar(ds, [np.mean(a) for a in acc], yerr=[np.std(a) for a in acc],
                                ls=ls, marker="o", color=f"C{ci}", capsize=3,
                                label=crit if guard else None)
            ax.set(xscale="log", xlabel="density (kept share of pruned kernels)",
                   ylabel="test accuracy (%)", title=method)


def _plot(rows, path):
    from subnets._plot import panels

    models = sorted({r["model"] for r in rows})
    with panels(path, len(models), 2, figsize=(10, 3.6 * len(models)), dpi=100) as axes:
        for (a, b), model in zip(axes, models, strict=True):
            for method, mark in zip(METHODS, "o^s", strict=True):
                rs = [r for r in rows if r["model"] == model and r["method"] == method]
                a.semilogx([r["params_after"] for r in rs],
                           [r["accuracy_removed"] for r in rs], mark, label=method)
                b.semilogx([r["params_after"] for r in rs], [r["latency_b64_ms"] for r in rs],
                           mark, label=method)
            a.set(title=f"{model}: accuracy", xlabel="stored parameters after removal")
            b.set(title=f"{model}: CPU ms / batch 64", xlabel="stored parameters")


if __name__ == "__main__":
    main()
