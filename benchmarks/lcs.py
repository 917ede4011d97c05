"""LCS accuracy across compression levels vs the baselines, at equal training budget.

Structured sparsity (widths 1.0 .. 0.25): LCS+P and LCS+L with InstanceNorm, Sandwich with
BatchNorm evaluated without recalibration (and, as a reference point, with it), and Discrete
(widths {0.25, 0.5, 0.75, 1}, BatchNorm). Unstructured (TopK densities) and quantised (bits)
point subspaces with GroupNorm. Every structured method sees 4 levels per step for the same
number of epochs.

Usage:
    python benchmarks/lcs.py [--quick] [--limit 6000] [--epochs 2] [--out lcs.png]

Prints one JSON object as its last line; writes a PNG of accuracy vs level to ``--out``.

``--width-sweep`` trains structured LCS+P points (range [0.25, 1]) over ``--seeds`` seeds for
each ``--samplings`` rule and evaluates 16 widths, three of them below the trained range
(deployed with ``out_of_range="allow"``; the library refuses them by default):

    python benchmarks/lcs.py --width-sweep --model dnn-s --data mnist5k --epochs 20 \\
        --seeds 3 --samplings sandwich,uniform --out lcs_widths.png

References:
    Nunez et al., LCS (arXiv:2110.04252), Fig. 6 and Table 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import jax
import optax

import subnets
from subnets import subspace
from subnets._plot import side_plot
from subnets.data import announce
from subnets.data.train_test import load_train_test
from subnets.subspace import baselines

STRUCTURED = ("lcs_p", "lcs_l", "sandwich_bn", "discrete")
ALL = STRUCTURED + ("unstructured_p", "quantized_p")


def _spec(method: str, lcs_norm: str):
    """(compression, kind, norm, config) of a method."""
    if method == "lcs_p":
        return "structured", "point", lcs_norm, subspace.LCSConfig(4, "sandwich")
    if method == "lcs_l":
        return "structured", "line", lcs_norm, subspace.LCSConfig(4, "sandwich")
    if method == "sandwich_bn":
        return "structured", "point", "batch", baselines.sandwich_config(4)
    if method == "discrete":
        return "structured", "point", "batch", baselines.discrete_config()
    if method == "unstructured_p":
        return "unstructured", "point", "group", subspace.LCSConfig(1, "uniform")
    if method == "quantized_p":
        return "quantized", "point", "group", subspace.LCSConfig(1, "uniform")
    raise ValueError(f"unknown method {method!r}; methods are {', '.join(ALL)}")


def _pool(x, k: int):
    n, h, w, c = x.shape
    if h % k or w % k:
        raise ValueError(f"--downsample {k} does not divide the {h}x{w} images")
    return x.reshape(n, h // k, k, w // k, k, c).mean(axis=(2, 4))


def _plot(results: dict, path: str) -> None:
    from subnets._plot import panels

    with panels(path, 1, 3, title="LCS vs baselines (equal epochs)", figsize=(14, 4)) as axes:
        for m, r in results.items():
            if "accuracy" not in r:
                continue
            levels = [float(k) for k in r["accuracy"]]
            ax = axes[0, {"structured": 0, "unstructured": 1, "quantized": 2}[r["compression"]]]
            ax.plot(levels, list(r["accuracy"].values()), marker="o", label=m)
            if "accuracy_recalibrated" in r:
                ax.plot(levels, list(r["accuracy_recalibrated"].values()), ls="--", marker="x",
                        label=m + " + BN recal.")
        for ax, xl in zip(axes[0], ("width factor", "TopK density", "bits"), strict=True):
            ax.set(xlabel=xl, ylabel="test accuracy")


SWEEP_WIDTHS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.875,
                0.9, 1.0)


def width_sweep(a) -> dict:
    """Accuracy at 16 widths over seeds: the range check and the 0.35-0.4 dip, measured."""
    import numpy as np

    model = a.model or "dnn-s"
    limit, test_limit = a.limit or (256 if a.quick else 4000), a.test_limit or 1000
    epochs = a.epochs or (1 if a.quick else 20)
    batch = a.batch_size or (32 if a.quick else 128)
    seeds = 1 if a.quick else a.seeds
    samplings = [s.strip() for s in a.samplings.split(",") if s.strip()]
    (x, y), (xt, yt) = load_train_test(a.data, limit=limit, test_limit=test_limit)
    classes = int(max(y.max(), yt.max())) + 1
    norm = "none" if model.startswith("dnn") else "instance"
    net = subnets.zoo.create(model, num_classes=classes, input_shape=x.shape[1:], norm=norm)
    t0 = time.perf_counter()
    acc: dict = {}
    for sampling in samplings:
        cfg = subspace.LCSConfig(4, sampling, levels=a.levels)
        for seed in range(a.seed, a.seed + seeds):
            key = jax.random.key(seed)
            s = subspace.init_point(net, key=key, compression="structured")
            s = subspace.fit(net, s, x, y, epochs=epochs, batch_size=batch, config=cfg,
                             lr=a.lr or 0.1, key=jax.random.fold_in(key, 1),
                             progress=sys.stderr.isatty(), desc=f"{sampling} seed {seed}")
            r = subspace.evaluate_levels(net, s, xt, yt, SWEEP_WIDTHS, out_of_range="allow")
            for w, v in r.items():
                acc.setdefault(sampling, {}).setdefault(str(w), []).append(v)
            print(f"{sampling} seed {seed}: {[round(v, 3) for v in r.values()]}",
                  file=sys.stderr, flush=True)
    summary = {smp: {w: {"mean": float(np.mean(v)), "std": float(np.std(v)),
                         "sem": float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1
                         else None, "in_range": float(w) >= 0.25}
                     for w, v in per.items()} for smp, per in acc.items()}
    out = {"benchmark": "lcs_width_sweep", "model": model, "data": a.data,
           "train_examples": len(x), "test_examples": len(xt), "epochs": epochs,
           "batch_size": batch, "seeds": seeds, "trained_range": [0.25, 1.0],
           "accuracy": acc, "summary": summary, "seconds": time.perf_counter() - t0}
    if a.out:
        from subnets._plot import figure

        def sweep_plot(path):
            with figure(path, xlabel="width factor", ylabel="test accuracy (%)",
                        title=f"LCS+P {model} on {a.data}, {seeds} seeds (grey: outside range)"
                        ) as ax:
                ax.axvspan(0.0, 0.25, color="grey", alpha=0.2)
                for smp, per in summary.items():
                    ws = [float(w) for w in per]
                    ax.errorbar(ws, [100 * v["mean"] for v in per.values()],
                                yerr=[100 * v["std"] for v in per.values()], marker="o",
                                capsize=3, label=f"sampling={smp}")

        out["png"] = side_plot(sweep_plot, a.out)
    print(json.dumps(out))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model and data")
    p.add_argument("--model", default=None, help="zoo model (default cpreresnet20)")
    p.add_argument("--data", default="default")
    p.add_argument("--limit", type=int, default=None, help="training examples (default 6000)")
    p.add_argument("--test-limit", type=int, default=None, help="test examples (default 2000)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"],
                   help="sgd: the reference's (momentum 0.9, wd 5e-4, cosine); adam: cosine "
                        "Adam, steadier for runs of a few dozen steps")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 0.1 for sgd, 1e-3 for adam)")
    p.add_argument("--methods", default=",".join(ALL), help=f"comma list of {', '.join(ALL)}")
    p.add_argument("--downsample", type=int, default=1,
                   help="average-pool images by this factor (2: 28x28 -> 14x14, 4x fewer MACs)")
    p.add_argument("--levels", choices=("vmap", "unroll"), default="vmap",
                   help="how each step evaluates its levels (same result; unroll is faster "
                        "on a CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="lcs.png", help="PNG path for the accuracy curves")
    p.add_argument("--width-sweep", action="store_true",
                   help="16 widths (incl. 3 outside the trained range) x --seeds seeds")
    p.add_argument("--seeds", type=int, default=3, help="--width-sweep: seeds")
    p.add_argument("--samplings", default="sandwich,uniform",
                   help="--width-sweep: comma list of LCSConfig.sampling rules")
    a = p.parse_args(argv)
    a.data = announce(a.data)
    if a.width_sweep:
        return width_sweep(a)
    model = a.model or ("dnn-s" if a.quick else "cpreresnet20")
    limit = a.limit or (256 if a.quick else 6000)
    test_limit = a.test_limit or (256 if a.quick else 2000)
    epochs = a.epochs or (1 if a.quick else 2)
    batch = a.batch_size or (32 if a.quick else 128)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    lcs_norm = "none" if model.startswith("dnn") else "instance"

    (x, y), (xt, yt) = load_train_test(a.data, limit=limit, test_limit=test_limit)
    if a.downsample > 1:
        x, xt = _pool(x, a.downsample), _pool(xt, a.downsample)
    classes = int(max(y.max(), yt.max())) + 1
    results = {}
    for i, method in enumerate(methods):
        comp, kind, norm, cfg = _spec(method, lcs_norm)
        cfg = dataclasses.replace(cfg, levels=a.levels)
        if model.startswith("dnn") and norm != "batch":
            norm = "none"
        if kind == "line" and comp == "structured" and norm == "none":
            # A structured line interpolates only norm layers; without norms there is none.
            results[method] = {"compression": comp, "skipped": "model has no norm layers"}
            continue
        net = subnets.zoo.create(model, num_classes=classes, input_shape=x.shape[1:], norm=norm)
        key = jax.random.key(a.seed)
        init = subspace.init_line if kind == "line" else subspace.init_point
        s = init(net, key=key, compression=comp)
        lr = a.lr or (1e-3 if a.optimizer == "adam" else 0.1)
        lr = lr / 4 if comp == "quantized" and a.optimizer == "sgd" else lr
        tx = None
        if a.optimizer == "adam":
            steps = epochs * (len(x) // batch)
            tx = optax.adamw(optax.cosine_decay_schedule(lr, steps), weight_decay=5e-4)
        t = time.perf_counter()
        s = subspace.fit(net, s, x, y, epochs=epochs, batch_size=batch, config=cfg, lr=lr, tx=tx,
                         key=jax.random.fold_in(key, 1), progress=sys.stderr.isatty(),
                         desc=method)
        train_s = time.perf_counter() - t
        acc = subspace.evaluate_levels(net, s, xt, yt)
        r = {"compression": comp, "kind": kind, "norm": norm, "train_s": round(train_s, 1),
             "accuracy": {str(k): round(v, 4) for k, v in acc.items()}}
        if method == "sandwich_bn":
            recal = {}
            for w in subspace.DEFAULT_LEVELS["structured"]:
                v = baselines.recalibrate(net, subspace.at_level(s, net, width=w),
                                          x[:2000], batch_size=min(250, len(x)))
                recal[str(w)] = round(subnets.train.evaluate(net, v, xt, yt), 4)
            r["accuracy_recalibrated"] = recal
        results[method] = r
        print(f"[{i + 1}/{len(methods)}] {method}: {r['accuracy']} ({train_s:.0f} s)",
              file=sys.stderr)
    out = {"model": model, "data": a.data, "input_shape": list(x.shape[1:]),
           "train_examples": len(x), "test_examples": len(xt),
           "epochs": epochs, "batch_size": batch, "optimizer": a.optimizer, "lr": a.lr,
           "seed": a.seed, "levels": a.levels,
           "methods": results}
    if "lcs_p" in results:
        lp = results["lcs_p"]["accuracy"]
        for base in ("sandwich_bn", "discrete"):
            if base in results:
                out[f"lcs_p_minus_{base}"] = {w: round(lp[w] - results[base]["accuracy"][w], 4)
                                              for w in lp}
    if a.out:
        out["png"] = side_plot(lambda p: _plot(results, p), a.out)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
