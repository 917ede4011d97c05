"""REDS on Fashion-MNIST: accuracy at 25/50/75/100% MACs by channel order and knapsack order.

Variants, all from ONE trained base model (except scratch), each fine-tuned jointly for the
same epochs:
  * ``taylor`` (REDS: first-order Taylor order, bottom-up knapsack);
  * ``l1``, ``l1_bn`` and ``random``: the ORDER ablation. The widths are the ones REDS chose;
    only which units each width keeps comes from the L1 norm of the incoming kernel (raw, as
    Li et al.), the L1 norm of the kernel with its BatchNorm folded in (as deployed), or a
    random permutation. Under BatchNorm the raw norm is scale-free (the norm divides it out),
    so it need not beat random;
  * ``l1_knapsack`` and ``random_knapsack``: those scores also drive the knapsack. Normalised L1
    norms are nearly flat within a layer, so the knapsack then prefers alternating widths
    (e.g. 63/8/64/4/64 for DS-CNN-S at 25%): a bottleneck that costs accuracy;
  * ``taylor_top_down``: Taylor order, top-down knapsack (largest budget first);
  * ``uniform``: every group scaled by the same fraction, the largest whose true MACs fit the
    budget (Taylor order decides which units), fine-tuned jointly like the others;
  * ``scratch``: every width of the ``taylor`` family trained alone from a fresh init for
    base + fine-tuning epochs (the 100% point is the base model).
Every level is reported at its TRUE (coupled) MACs. Reference (REDS paper, DS-CNN-S, bottom-up):
91.60/91.51/90.75/89.22 at 100/75/50/25% MACs, after 250 epochs of fine-tuning.

With ``--model cpreresnet20`` (residual stages: the exact graph knapsack) the default variants are
``taylor`` (knapsack widths), ``uniform`` and ``scratch``. ``--seeds 0,1,2`` repeats everything
(base model included) per seed and reports the mean and standard deviation per level.

Usage:
    python benchmarks/reds.py [--quick] [--out reds.png] [--train-limit N] [--epochs E]
    python benchmarks/reds.py --model cpreresnet20 --data digits --seeds 0,1,2 [--quick]

Prints one JSON object as the last stdout line; writes the accuracy-vs-MACs PNG to ``--out``.

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 4 and Table 3.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax

from subnets._plot import side_plot
from subnets.data import announce

REFERENCE = {"macs_fraction": [1.0, 0.75, 0.5, 0.25], "accuracy": [91.60, 91.51, 90.75, 89.22]}
VARIANTS = ("taylor", "l1", "l1_bn", "random", "l1_knapsack", "l1_bn_knapsack",
            "random_knapsack", "taylor_top_down", "uniform", "scratch")
# Residual nets: the width comparison of the knapsack issue (knapsack vs uniform vs scratch).
RESIDUAL_VARIANTS = ("taylor", "uniform", "scratch")
DEFAULT_VARIANTS = ("taylor", "l1", "l1_bn", "random", "l1_knapsack", "taylor_top_down",
                    "scratch")
ORDER_ONLY = ("l1", "l1_bn", "random")  # at the widths REDS (taylor) chose


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 512 examples, 1 epoch, budgets 0.25,0.5, dnn-s unless "
                        "--model is given")
    p.add_argument("--model", default=None, help="zoo model (default ds-cnn-s)")
    p.add_argument("--data", default="default")
    p.add_argument("--budgets", default="0.25,0.5,0.75")
    p.add_argument("--train-limit", type=int, default=None, help="first N training examples")
    p.add_argument("--test-limit", type=int, default=None, help="first N test examples")
    p.add_argument("--epochs", type=int, default=10, help="base training epochs")
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--score-batches", type=int, default=100)
    p.add_argument("--variants", default=None,
                   help=f"comma-separated, from {','.join(VARIANTS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None, help="comma-separated seeds (overrides --seed); the "
                   "JSON then holds per-seed results and mean/std per variant and level")
    p.add_argument("--out", default=None, help="PNG path for the accuracy-vs-MACs plot")
    args = p.parse_args(argv)
    args.data = announce(args.data)
    if args.quick:
        args.model = args.model or "dnn-s"
        args.train_limit = min(args.train_limit or 512, 512)
        args.test_limit = min(args.test_limit or 512, 512)
        args.epochs, args.finetune_epochs = 1, 1
        args.batch_size, args.score_batches = 64, 2
        args.budgets = "0.25,0.5"
    args.model = args.model or "ds-cnn-s"
    if args.variants is None:
        args.variants = ",".join(RESIDUAL_VARIANTS if "resnet" in args.model
                                 else DEFAULT_VARIANTS)
    return args


def _scratch(cfg, net, widths_list, train, test, epochs):
    from subnets.train import evaluate, fit
    from subnets.transforms import slice_widths

    out = []
    for i, widths in enumerate(widths_list):
        v = slice_widths(net.init(jax.random.key(cfg.seed + 100 + i)), net.graph, widths)
        v = fit(net, v, *train, epochs=epochs, batch_size=cfg.batch_size,
                key=jax.random.key(cfg.seed + 200 + i), progress=False)
        out.append(evaluate(net, v, *test))
    return out


def _taylor_levels(cfg, net, base, train, budgets):
    """The widths REDS picks (Taylor scores, bottom-up), without fine-tuning."""
    from subnets.nested import pipeline

    scores, _ = pipeline.score_channels(net, base, "taylor", *train,
                                        key=jax.random.fold_in(jax.random.key(cfg.seed), 2),
                                        num_batches=cfg.score_batches, batch_size=cfg.batch_size)
    return pipeline.build_family(net, base, scores, budgets).levels


def _uniform_levels(net, budgets, min_units: int = 2):
    """Per budget, every group at ``max(min_units, floor(f * size))`` for the largest ``f`` whose
    true MACs fit (bisection on ``f``); nested because the widths grow with ``f``."""
    from subnets import cost

    full = cost.macs(net)
    free = net.graph.free

    def widths(f):
        return {g.name: min(g.size, max(min_units, int(f * g.size + 1e-9))) for g in free}

    out = []
    for b in sorted(budgets):
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if cost.macs(net, widths(mid)) <= b * full:
                lo = mid
            else:
                hi = mid
        out.append(widths(lo))
    return out


def _plot(results: dict, path: str, title: str, spread: dict | None = None) -> None:
    from subnets._plot import figure

    with figure(path, xlabel="true MACs (% of full)", ylabel="test accuracy (%)", title=title,
                figsize=(6, 4)) as ax:
        for name, levels in results.items():
            x = [lv["macs_fraction"] * 100 for lv in levels]
            y = [lv["accuracy"] * 100 for lv in levels]
            if spread:
                ax.errorbar(x, y, yerr=[100 * e for e in spread[name]], fmt="o-", capsize=3,
                            label=f"{name} (mean +- std)")
            else:
                ax.plot(x, y, "o-", label=name)
        if spread is None:
            ax.plot([f * 100 for f in REFERENCE["macs_fraction"]], REFERENCE["accuracy"], "k:",
                    label="REDS paper (DS-CNN-S, 250 ep.)")


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    if args.seeds is None:
        out = run_seed(args)
        print(json.dumps(out))
        return out
    import numpy as np

    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    png = args.out
    runs = []
    for seed in seeds:
        args.seed, args.out = seed, None
        runs.append(run_seed(args))
    names = list(runs[0]["results"])
    mean, std = {}, {}
    for name in names:
        acc = np.array([[lv["accuracy"] for lv in r["results"][name]] for r in runs])
        frac = np.array([[lv["macs_fraction"] for lv in r["results"][name]] for r in runs])
        mean[name] = [{"budget": lv["budget"], "macs_fraction": float(f), "accuracy": float(a),
                       "accuracy_std": float(e)}
                      for lv, f, a, e in zip(runs[0]["results"][name], frac.mean(0),
                                             acc.mean(0), acc.std(0), strict=True)]
        std[name] = acc.std(0).tolist()
    if png:
        png = side_plot(lambda p: _plot(mean, p, f"{runs[0]['model']} on {runs[0]['data']}, "
                                        f"{runs[0]['train_examples']} train, seeds {seeds}",
                                        spread=std), png)
    out = {**{k: runs[0][k] for k in ("benchmark", "model", "data", "quick", "train_examples",
                                        "test_examples", "epochs", "finetune_epochs",
                                        "budgets")},
           "seeds": seeds, "mean": mean, "per_seed": [r["results"] for r in runs],
           "timings": [r["timings"] for r in runs], "png": png}
    print(json.dumps(out))
    return out


def run_seed(args) -> dict:
    """One seed of the benchmark (base model, every variant); returns its JSON dict."""
    from subnets.nested import pipeline

    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {VARIANTS}")
    budgets = tuple(float(b) for b in args.budgets.split(","))
    cfg = pipeline.NestConfig(model=args.model, data=args.data, budgets=budgets,
                              epochs=args.epochs, finetune_epochs=args.finetune_epochs,
                              batch_size=args.batch_size, score_batches=args.score_batches,
                              seed=args.seed)
    t0 = time.perf_counter()
    net = pipeline.make_net(cfg)
    train, test = pipeline.load_data(cfg)
    if args.train_limit:
        train = tuple(a[: args.train_limit] for a in train)
    if args.test_limit:
        test = tuple(a[: args.test_limit] for a in test)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    log(f"{net.name} on {cfg.data}: {len(train[0])} train / {len(test[0])} test")
    base, _ = pipeline.train_base(cfg, net, train, None, progress=sys.stderr.isatty())
    timings = {"base_s": time.perf_counter() - t0}
    results: dict[str, list[dict]] = {}
    taylor_levels = None
    # taylor first: the order ablation (l1, random) reuses its widths
    for name in sorted(variants, key=lambda v: v != "taylor"):
        if name == "scratch":
            continue
        t = time.perf_counter()
        score = name.removesuffix("_knapsack").removesuffix("_top_down")
        order = "top_down" if name.endswith("top_down") else "bottom_up"
        vcfg = pipeline.NestConfig(**{**cfg.__dict__, "score": score, "order": order})
        fixed = None
        if name == "uniform":
            vcfg = pipeline.NestConfig(**{**cfg.__dict__, "score": "taylor"})
            fixed = _uniform_levels(net, budgets)
        elif name in ORDER_ONLY:
            if taylor_levels is None:
                taylor_levels = _taylor_levels(cfg, net, base, train, budgets)
            fixed = taylor_levels[:-1]
        family, metrics = pipeline.nest(vcfg, net, base, train, test,
                                        progress=sys.stderr.isatty(), levels=fixed)
        results[name] = [{k: lv[k] for k in ("budget", "macs_fraction", "accuracy",
                                             "accuracy_before_finetune", "widths")}
                         for lv in metrics["levels"]]
        if name == "taylor":
            taylor_levels = family.levels
        timings[f"{name}_s"] = time.perf_counter() - t
        log(f"{name}: " + " ".join(f"{lv['macs_fraction']:.0%}:{lv['accuracy']:.4f}"
                                   for lv in results[name]))
    if "scratch" in variants:
        t = time.perf_counter()
        if taylor_levels is None:
            taylor_levels = _taylor_levels(cfg, net, base, train, budgets)
        accs = _scratch(cfg, net, taylor_levels[:-1], train, test,
                        cfg.epochs + cfg.finetune_epochs)
        from subnets import cost

        base_acc = results["taylor"][-1]["accuracy_before_finetune"] if "taylor" in results \
            else None
        full = cost.macs(net)
        results["scratch"] = [{"budget": b, "macs_fraction": cost.macs(net, w) / full,
                               "accuracy": a, "widths": w}
                              for b, w, a in zip(sorted(budgets), taylor_levels[:-1], accs,
                                                 strict=True)]
        if base_acc is not None:
            results["scratch"].append({"budget": 1.0, "macs_fraction": 1.0,
                                       "accuracy": base_acc, "widths": net.graph.full_widths()})
        timings["scratch_s"] = time.perf_counter() - t
        log("scratch: " + " ".join(f"{lv['macs_fraction']:.0%}:{lv['accuracy']:.4f}"
                                   for lv in results["scratch"]))
    timings["total_s"] = time.perf_counter() - t0
    at25 = {k: v[0]["accuracy"] for k, v in results.items()}
    checks = {}
    for l1 in ("l1", "l1_bn"):
        if all(k in at25 for k in ("taylor", l1, "random")):
            checks[l1] = bool(at25["taylor"] >= at25[l1] >= at25["random"])
    if args.out:
        args.out = side_plot(lambda p: _plot(results, p, f"{net.name} on {cfg.data}, "
                                             f"{len(train[0])} train examples"), args.out)
    out = {"benchmark": "reds", "model": net.name, "data": cfg.data, "quick": args.quick,
           "train_examples": int(len(train[0])), "test_examples": int(len(test[0])),
           "epochs": cfg.epochs, "finetune_epochs": cfg.finetune_epochs,
           "budgets": list(budgets), "results": results, "accuracy_at_smallest": at25,
           "taylor_ge_l1_ge_random_at_smallest": checks.get("l1"),
           "taylor_ge_l1_bn_ge_random_at_smallest": checks.get("l1_bn"),
           "reference": REFERENCE,
           "timings": timings, "png": args.out}
    return out


if __name__ == "__main__":
    main()
