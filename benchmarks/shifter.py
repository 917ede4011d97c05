"""DNNShifter: IMP sparse levels -> removed dense models; size, accuracy, latency, switching.

For every IMP level: density, parameters and bytes after exact dead-structure removal, accuracy
of the sparse and the removed model (equal by construction, checked), CPU latency of the dense
model vs the masked-sparse one vs the removed one (jitted, batch 1 and 64, medians, measured
side by side in one process), and the removal time. Then switching among the removed models:
a Portfolio (DEFLATE-compressed inactive variants, inflate on switch) vs keeping every variant
loaded vs reading a variant's file from disk vs a nested Family over one weight set (whose
levels are slices of the dense model, so it shows the mechanism's cost, not IMP's accuracy).

Usage:
    python benchmarks/shifter.py --quick
    python benchmarks/shifter.py --model vgg16 --levels 6 --epochs 2 --limit 6000 \\
        --out shifter.png

``--sweep`` measures layer collapse instead: accuracy vs density of the IMP levels for global
and per-layer magnitude ranking, each with and without the per-layer floor
(:mod:`subnets.pruning.scoring`), over ``--seeds`` seeds (mean and standard deviation):

    python benchmarks/shifter.py --sweep --model dnn-s --data mnist5k --levels 5 \\
        --fraction 0.45 --epochs 10 --seeds 3 --out shifter_sweep.png

The last stdout line is one JSON object.

References:
    Eccles et al., DNNShifter (arXiv:2309.06973): 5.14x smaller, 1.67x faster than sparse,
    switching with 11.9x lower overhead and 3.8x lower memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import add_run_flags, load_limited  # noqa: E402
from benchmarks._timing import latency_ms  # noqa: E402
from subnets import io, zoo  # noqa: E402
from subnets._plot import side_plot  # noqa: E402
from subnets.data import announce
from subnets.pruning.masked import apply_masks  # noqa: E402
from subnets.pruning.pipeline import PruneConfig, level_metrics, sparse_levels  # noqa: E402
from subnets.runtime import Portfolio  # noqa: E402


def _median_us(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e6 * float(np.median(times))


def switching(net, removed: dict, dense: dict, widths: dict, folder: str, repeats: int) -> dict:
    names = list(removed)
    portfolio = Portfolio()
    for n in names:
        portfolio.add(n, removed[n])
    loaded = {n: jax.device_put(v) for n, v in removed.items()}
    paths = {}
    for n in names:
        paths[n] = os.path.join(folder, f"{n}.subnets")
        io.save(paths[n], removed[n])
    cycle = iter(range(10**9))

    def next_name():
        return names[next(cycle) % len(names)]

    out = {
        "portfolio_switch_us": _median_us(lambda: portfolio.switch(next_name()), repeats),
        "all_loaded_switch_us": _median_us(lambda: loaded[next_name()], repeats),
        "disk_load_switch_us": _median_us(lambda: io.load(paths[next_name()]), repeats),
        "portfolio_memory_bytes": portfolio.memory_bytes(),
        "portfolio_compressed_bytes": portfolio.compressed_bytes(),
        "all_loaded_memory_bytes": portfolio.dense_bytes(),
    }
    try:
        from subnets.runtime.family import Family
    except ImportError:
        out["family"] = "pending: subnets.runtime.family not available"
        return out
    # A Family needs nested widths: order the levels from narrow to wide, widen to nest.
    levels = sorted(widths.values(), key=lambda w: sum(w.values()))
    nested, acc = [], {}
    for w in reversed(levels):
        acc = {g: max(acc.get(g, 0), k) for g, k in w.items()}
        nested.append(dict(acc))
    nested = nested[::-1]
    fam = Family(net, dense, nested, batch_shape=(1,) + tuple(net.input_shape))
    idx = iter(range(10**9))
    out["family_switch_us"] = _median_us(lambda: fam.switch(next(idx) % len(nested)), repeats)
    out["family_memory_bytes"] = fam.memory_bytes()
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg16")
    p.add_argument("--data", default="default")
    p.add_argument("--levels", type=int, default=5)
    p.add_argument("--fraction", type=float, default=0.5,
                   help="share of remaining weights pruned per level (OpenLTH: 0.2; larger "
                        "reaches high compression in fewer levels)")
    p.add_argument("--sweep", action="store_true",
                   help="accuracy vs density, global/layer ranking, with and without the floor")
    p.add_argument("--seeds", type=int, default=3, help="--sweep: seeds per point")
    p.add_argument("--lr", type=float, default=3e-3, help="--sweep: Adam peak learning rate")
    add_run_flags(p, limit=4000, repeats=30, out_help="PNG path for the size/latency curves")
    args = p.parse_args(argv)
    args.data = announce(args.data)
    if args.sweep:
        return sweep(args)
    if args.quick:
        args.model, args.data, args.levels, args.epochs = "dnn-s", "digits", 1, 1
        args.limit, args.repeats, args.batch_size = 384, 5, 64
    t_start = time.perf_counter()
    cfg = PruneConfig(method="imp", model=args.model, data=args.data, levels=args.levels,
                      fraction=args.fraction, epochs=args.epochs, batch_size=args.batch_size,
                      limit=args.limit, seed=args.seed, progress=sys.stderr.isatty())
    x, y, xt, yt, classes = load_limited(args.data, args.limit)
    net = zoo.create(args.model, num_classes=classes, input_shape=x.shape[1:])
    levels = sparse_levels(cfg, net, x, y, key=jax.random.key(args.seed))
    dense = levels[0]["variables"]
    rows, removed, widths = [], {}, {}
    for lv in levels:
        m, rem, w = level_metrics(net, lv["variables"], lv["masks"], xt, yt)
        sparse = apply_masks(lv["variables"], lv["masks"])
        for b in (1, 64):
            # Dense and masked-sparse measured back to back, so load changes hit both alike.
            m[f"latency_dense_b{b}_ms"] = latency_ms(net, dense, b, args.repeats)
            m[f"latency_sparse_b{b}_ms"] = latency_ms(net, sparse, b, args.repeats)
            m[f"latency_removed_b{b}_ms"] = latency_ms(net, rem, b, args.repeats)
        m["name"] = lv["name"]
        m.pop("widths")
        rows.append(m)
        removed[lv["name"]], widths[lv["name"]] = rem, w
    with tempfile.TemporaryDirectory() as folder:
        sw = switching(net, removed, dense, widths, folder, max(20, args.repeats))
    last = rows[-1]
    result = {
        "benchmark": "shifter", "model": args.model, "data": args.data, "quick": args.quick,
        "levels": rows, "switching": sw,
        "final_compression_vs_dense": rows[0]["params_after"] / last["params_nonzero"],
        "final_size_reduction_by_removal": last["params_before"] / last["params_after"],
        "final_speedup_b64_removed_vs_sparse": last["latency_sparse_b64_ms"]
        / last["latency_removed_b64_ms"],
        "accuracy_equal_all_levels": all(r["accuracy_sparse"] == r["accuracy_removed"]
                                         for r in rows),
        "seconds": time.perf_counter() - t_start,
    }
    if args.out:
        result["png"] = side_plot(lambda p: _plot(rows, p, args.model), args.out)
    print(json.dumps(result))
    return result


def sweep(args) -> dict:
    """IMP levels' accuracy vs density: scope x floor x seeds."""
    import warnings

    from subnets import train
    from subnets.pruning.imp import imp, make_train_fn
    from subnets.pruning.scoring import DEFAULT_FLOOR, collapse_report

    if args.quick:
        args.model, args.data, args.levels, args.epochs, args.seeds = "dnn-s", "digits", 2, 1, 1
        args.limit, args.batch_size, args.fraction = 384, 64, 0.7
    t_start = time.perf_counter()
    x, y, xt, yt, classes = load_limited(args.data, args.limit)
    net = zoo.create(args.model, num_classes=classes, input_shape=x.shape[1:])
    steps = args.epochs * max(1, len(x) // args.batch_size)
    fn = make_train_fn(net, x, y, epochs=args.epochs, batch_size=args.batch_size,
                       optimizer=train.default_optimizer(steps, args.lr), progress=False)
    rows = []
    for scope in ("global", "layer"):
        for guard in (True, False):
            for seed in range(args.seed, args.seed + args.seeds):
                k_init, k_run = jax.random.split(jax.random.key(seed))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    levels = imp(net, net.init(k_init), train_fn=fn, levels=args.levels,
                                 fraction=args.fraction, scope=scope, key=k_run,
                                 floor=DEFAULT_FLOOR if guard else None)
                for lv in levels:
                    rows.append({"scope": scope, "guard": guard, "seed": seed,
                                 "level": lv.level, "density": lv.density,
                                 "accuracy": train.evaluate(net, lv.variables, xt, yt),
                                 "collapsed_layers": len(collapse_report(lv.masks))})
                print(f"imp {scope} guard={guard} seed={seed}: "
                      f"{[round(r['accuracy'], 3) for r in rows[-len(levels):]]}",
                      file=sys.stderr, flush=True)
    summary = {}
    for r in rows:
        key = f"{r['scope']}|{'floor' if r['guard'] else 'none'}|level {r['level']}"
        summary.setdefault(key, {"density": r["density"], "acc": []})["acc"].append(
            r["accuracy"])
    summary = {k: {"density": v["density"], "mean": float(np.mean(v["acc"])),
                   "std": float(np.std(v["acc"])), "n": len(v["acc"])}
               for k, v in summary.items()}
    result = {"benchmark": "shifter_sweep", "model": args.model, "data": args.data,
              "quick": args.quick, "epochs": args.epochs, "fraction": args.fraction,
              "train_examples": len(x), "test_examples": len(xt), "seeds": args.seeds,
              "rows": rows, "summary": summary, "seconds": time.perf_counter() - t_start}
    if args.out:
        from subnets._plot import figure

        def sweep_plot(path):
            with figure(path, xlabel="density (kept share of prunable weights)",
                        ylabel="test accuracy (%)",
                        title=f"IMP on {args.model}/{args.data}: solid = floor, dashed = none"
                        ) as ax:
                for ci, scope in enumerate(("global", "layer")):
                    for guard, ls in ((True, "-"), (False, "--")):
                        rs = [v for k, v in summary.items()
                              if k.startswith(f"{scope}|{'floor' if guard else 'none'}|")]
                        rs.sort(key=lambda v: -v["density"])
                        ax.errorbar([v["density"] for v in rs], [100 * v["mean"] for v in rs],
                                    yerr=[100 * v["std"] for v in rs], ls=ls, marker="o",
                                    color=f"C{ci}", capsize=3,
                                    label=f"{scope}{' + floor' if guard else ''}")
                ax.set_xscale("log")
                ax.invert_xaxis()

        result["png"] = side_plot(sweep_plot, args.out)
    print(json.dumps(result))
    return result


def _plot(rows, path, model):
    from subnets._plot import panels

    d = [r["density"] for r in rows]
    title = f"DNNShifter on {model}: IMP levels after dead-structure removal"
    with panels(path, 1, 2, title=title, dpi=100) as axes:
        a, b = axes[0]
        a.loglog(d, [r["params_before"] for r in rows], "o-", label="sparse (stored dense)")
        a.loglog(d, [r["params_after"] for r in rows], "s-", label="after removal")
        a.loglog(d, [r["params_nonzero"] for r in rows], "^--", label="non-zero")
        a.set(xlabel="density", ylabel="parameters")
        a.invert_xaxis()
        for kind, mark in (("dense", "o-"), ("sparse", "^-"), ("removed", "s-")):
            b.semilogx(d, [r[f"latency_{kind}_b64_ms"] for r in rows], mark, label=kind)
        b.set(xlabel="density", ylabel="ms / batch of 64 (CPU)")
        b.invert_xaxis()


if __name__ == "__main__":
    main()
