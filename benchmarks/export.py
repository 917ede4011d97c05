"""Export benchmark: per width level, TFLM int8 vs JAX float accuracy, flash and arena bytes.

Two models, as the export issue asks:
- ``ds-cnn-s`` on KWS-shaped input (49x10x1). Speech Commands is not available offline, so the
  data are SYNTHETIC: 12 classes, each a fixed random 49x10 template, plus noise.
- ``vision-ds-cnn`` on Fashion-MNIST (IDX files in /usr/share/datasets/fashion-mnist).

Each network is trained briefly as a nested family (sandwich rule: the full, the smallest and one
random width-masked level per step, so every level is a usable classifier), every level's
BatchNorm statistics are re-estimated at its own width (as slimmable networks do), then each
level is sliced, converted to a full-int8 TFLite model and run in the TFLite-Micro interpreter
on the evaluation samples.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/export.py [--quick] [--out export.png]

Prints one JSON object as its last line.

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 5; Yu et al., Slimmable Networks (ICLR 2019)
    for per-width BatchNorm statistics.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

import subnets
from subnets import data, export
from subnets._plot import side_plot
from subnets.train import cross_entropy


def kws_synthetic(n: int, *, key: jax.Array, classes: int = 12,
                  task_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic 49x10x1 'keywords': a fixed random template per class plus noise, in [0, 1].

    The templates depend only on ``task_seed`` (one task); ``key`` draws the samples, so train
    and test sets made with different keys are two samples of the same task.
    """
    templates = np.asarray(jax.random.uniform(jax.random.key(task_seed), (classes, 49, 10, 1)))
    k_y, k_n = jax.random.split(key)
    y = np.asarray(jax.random.randint(k_y, (n,), 0, classes), np.int32)
    noise = np.asarray(jax.random.normal(k_n, (n, 49, 10, 1))) * 0.3
    return np.clip(templates[y] + noise, 0, 1).astype(np.float32), y


@dataclass(frozen=True)
class NestedLevels:
    """Trained nested levels; each level keeps its own re-estimated BatchNorm statistics."""

    net: object
    variables: dict
    levels: tuple
    stats: tuple

    def level_variables(self, i: int) -> dict:
        v = subnets.slice_widths(self.net.graph, self.variables, self.levels[i])
        return {**v, "batch_stats": self.stats[i]} if self.stats[i] is not None else v


def train_nested(net, x, y, levels, *, steps: int, key: jax.Array, batch: int = 64,
                 lr: float = 3e-3, progress: bool = False) -> NestedLevels:
    """A short nested training run by the sandwich rule: each step trains the full level, the
    smallest level and one level drawn at random between them (width masks, so one compilation
    serves every level)."""
    from tqdm.auto import tqdm

    k_init, k_data, k_level = jax.random.split(key, 3)
    variables = net.init(k_init)
    tx = optax.adam(optax.cosine_decay_schedule(lr, max(1, steps)))
    opt = tx.init(variables["params"])
    table = {g: jnp.asarray([lv[g] for lv in levels]) for g in levels[-1]}

    def loss_fn(params, v, xb, yb, i):
        v = {**v, "params": params}
        full, stats = net.apply(v, xb, train=True, mutable=True)
        loss = cross_entropy(full, yb)
        for j in (0, i) if len(levels) > 2 else (0,):
            masked = subnets.width_mask(net.graph, v, {g: t[j] for g, t in table.items()})
            loss = loss + cross_entropy(net.apply(masked, xb, train=True), yb)
        # Running statistics from the full level; every level re-estimates its own below.
        return loss, stats

    @jax.jit
    def step(v, opt, xb, yb, i):
        (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(v["params"], v, xb, yb, i)
        upd, opt = tx.update(g, opt, v["params"])
        v = {**v, "params": optax.apply_updates(v["params"], upd)}
        if "batch_stats" in v:
            v["batch_stats"] = stats
        return v, opt, loss

    idx = np.asarray(jax.random.randint(k_data, (steps, batch), 0, len(x)))
    # The random level lies strictly between the smallest and the full one.
    pick = np.asarray(jax.random.randint(k_level, (steps,), 1, max(2, len(levels) - 1)))
    for i in tqdm(range(steps), desc=f"train {net.name}", disable=not progress, leave=False):
        variables, opt, _ = step(variables, opt, x[idx[i]], y[idx[i]], pick[i])
    stats = tuple(_recalibrate(net, subnets.slice_widths(net.graph, variables, w), x)
                  for w in levels)
    return NestedLevels(net, variables, tuple(levels), stats)


def _recalibrate(net, v, x, batches: int = 8, batch: int = 256):
    """BatchNorm running statistics at this width: the mean over a few batches' statistics."""
    if "batch_stats" not in v:
        return None
    fresh = jax.tree.map(jnp.zeros_like, v["batch_stats"])
    run = jax.jit(lambda v, xb: net.apply(v, xb, train=True, mutable=True)[1])
    acc = fresh
    for i in range(batches):
        xb = x[(i * batch) % len(x):][:batch]
        # Flax BN: new = 0.9 * old + 0.1 * batch; from zeros this recovers the batch statistic.
        got = run({**v, "batch_stats": fresh}, xb)
        acc = jax.tree.map(lambda a, b: a + b / 0.1 / batches, acc, got)
    return acc


def run_model(name: str, x, y, xe, ye, rep, *, fractions, steps, key, progress) -> dict:
    net = subnets.zoo.create(name, num_classes=int(y.max()) + 1, input_shape=x.shape[1:])
    levels = export.uniform_levels(net.graph, fractions)
    t0 = time.perf_counter()
    fam = train_nested(net, x, y, levels, steps=steps, key=key, progress=progress)
    train_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        manifest = export.export_family(fam, out, representative=rep, eval_data=(xe, ye),
                                        board="nano33ble", progress=progress)
    rows = [{"fraction": f, "macs": e["macs"], "params": e["params"],
             "flash_bytes": e["flash_bytes"], "arena_bytes": e["arena_bytes"],
             "convert_seconds": e["convert_seconds"], **e["eval"]}
            for f, e in zip(fractions, manifest["levels"], strict=True)]
    return {"model": name, "train_steps": steps, "train_seconds": round(train_s, 1),
            "fits_nano33ble": manifest["fits"], "levels": rows,
            "min_agreement": min(r["top1_agreement"] for r in rows),
            "max_accuracy_drop": max(r["accuracy_drop"] for r in rows),
            "bytes_shrink": all(a["flash_bytes"] < b["flash_bytes"]
                                for a, b in zip(rows, rows[1:], strict=False)),
            "arena_shrink": all(a["arena_bytes"] < b["arena_bytes"]
                                for a, b in zip(rows, rows[1:], strict=False))}


def plot(results: list[dict], path: str) -> None:
    from subnets._plot import panels

    with panels(path, 1, 2, figsize=(10, 4), dpi=120) as axes:
        acc, size = axes[0]
        for r in results:
            f = [row["fraction"] for row in r["levels"]]
            acc.plot(f, [row["jax_float_accuracy"] for row in r["levels"]], "o-",
                     label=f"{r['model']} JAX float")
            acc.plot(f, [row["tflm_accuracy"] for row in r["levels"]], "s--",
                     label=f"{r['model']} TFLM int8")
            size.plot(f, [row["flash_bytes"] / 1024 for row in r["levels"]], "o-",
                      label=f"{r['model']} flash")
            size.plot(f, [row["arena_bytes"] / 1024 for row in r["levels"]], "s--",
                      label=f"{r['model']} arena")
        acc.set(xlabel="width fraction", ylabel="top-1 accuracy", title="accuracy per level")
        size.set(xlabel="width fraction", ylabel="KiB", title="model and arena size",
                 yscale="log")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run (~30 s)")
    p.add_argument("--eval", type=int, default=1000, help="evaluation samples")
    p.add_argument("--steps", type=int, default=600, help="training steps per model")
    p.add_argument("--models", default="ds-cnn-s,vision-ds-cnn",
                   help="comma-separated: ds-cnn-s (synthetic KWS) and/or vision-ds-cnn")
    p.add_argument("--out", default=None, help="PNG path for the per-level plot")
    args = p.parse_args(argv)
    progress = sys.stderr.isatty()
    key = jax.random.key(0)
    if args.quick:
        # Smoke run: no training (its compile dominates), BN re-estimation and export only.
        fractions, steps, n_eval, models = (0.25, 1.0), 0, 100, ("ds-cnn-s",)
    else:
        fractions, steps, n_eval = (0.25, 0.5, 0.75, 1.0), args.steps, args.eval
        models = tuple(m for m in args.models.split(",") if m)
        unknown = set(models) - {"ds-cnn-s", "vision-ds-cnn"}
        if unknown:
            p.error(f"--models: unknown {sorted(unknown)}; choose ds-cnn-s, vision-ds-cnn")
    results = []
    for i, name in enumerate(models):
        k_train, k_eval, k_fit = jax.random.split(jax.random.fold_in(key, i), 3)
        if name == "ds-cnn-s":
            x, y = kws_synthetic(4000, key=k_train)
            xe, ye = kws_synthetic(n_eval, key=k_eval)
            source = "synthetic KWS 49x10x1 (Speech Commands unavailable offline)"
        else:
            x, y = data.load("fashion_mnist", "train")
            xe, ye = data.load("fashion_mnist", "test")
            xe, ye = xe[:n_eval], ye[:n_eval]
            source = "fashion_mnist"
        rep = x[np.random.default_rng(i).choice(len(x), 200, replace=False)]
        r = run_model(name, x, y, xe, ye, rep, fractions=fractions, steps=steps, key=k_fit,
                      progress=progress)
        r["data"] = source
        results.append(r)
        for row in r["levels"]:
            print(f"{name} w={row['fraction']:.2f} MACs={row['macs']:,} "
                  f"flash={row['flash_bytes']:,}B arena={row['arena_bytes']:,}B "
                  f"float={row['jax_float_accuracy']:.3f} tflm={row['tflm_accuracy']:.3f} "
                  f"agree={row['top1_agreement']:.3f} convert={row['convert_seconds']:.1f}s",
                  file=sys.stderr)
    if args.out:
        side_plot(lambda p: plot(results, p), args.out)
    print(json.dumps({"benchmark": "export", "quick": args.quick, "eval_samples": n_eval,
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
