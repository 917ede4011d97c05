"""The end-to-end REDS pipeline: train (or load) -> score -> permute -> select -> fine-tune ->
evaluate, as composable steps and one :func:`run` used by ``subnets nest``.

Example:
    >>> import jax, numpy as np, subnets
    >>> from subnets.nested.pipeline import build_family
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> v = net.init(jax.random.key(0))
    >>> scores = subnets.importance.l1(net.graph, v)
    >>> fam = build_family(net, v, scores, [0.5])
    >>> len(fam.levels), subnets.cost.macs(net, fam.levels[0]) <= subnets.cost.macs(net) / 2
    (2, True)

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3 (the whole method) and Sec. 4 (experiments).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from subnets import cost, importance
from subnets._plot import figure, side_plot
from subnets.io import write_json
from subnets.models.protocol import describe
from subnets.runtime.family import Family
from subnets.transforms import permute

SCORERS = ("taylor", "l1", "l1_bn", "random")
# The settings the base checkpoint depends on: reused only when all of them match.
BASE_KEYS = ("model", "data", "epochs", "batch_size", "seed", "limit")


@dataclass(frozen=True)
class NestConfig:
    """Everything ``subnets nest`` needs; defaults follow REDS where practical on a CPU."""

    model: str = "ds-cnn-s"
    data: str = "default"
    budgets: tuple[float, ...] = (0.25, 0.5, 0.75)
    epochs: int = 10
    finetune_epochs: int = 10
    batch_size: int = 128
    score: str = "taylor"
    score_batches: int = 100
    order: str = "bottom_up"
    resource: str = "macs"
    objective: str = "units"
    cost: str = "coupled"
    min_units: int = 2
    min_fraction: float = 0.0
    distill: float = 0.0
    seed: int = 0
    limit: int | None = None
    data_dir: str | None = None
    lr: float | None = None
    """Peak learning rate of the base training (Adam, cosine); None: ``train.fit``'s default."""


def load_data(cfg: NestConfig) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray,
                                                                             np.ndarray]]:
    """``(train, test)`` pairs; ``cfg.limit`` keeps the first N of each (quick runs)."""
    from subnets.data.train_test import load_train_test

    return load_train_test(cfg.data, limit=cfg.limit, data_dir=cfg.data_dir)


def make_net(cfg: NestConfig) -> Any:
    """The zoo model ``cfg.model`` sized for the data set's inputs and classes."""
    from subnets import data
    from subnets.models import zoo

    meta = data.info(cfg.data)
    return zoo.create(cfg.model, num_classes=meta.num_classes, input_shape=meta.input_shape)


def score_channels(net: Any, variables: Mapping, method: str, x: np.ndarray, y: np.ndarray, *,
                   key: jax.Array, num_batches: int = 100,
                   batch_size: int = 128) -> tuple[dict, dict | None]:
    """``(scores, saliency tree or None)`` by ``method`` in :data:`SCORERS`.

    Taylor gradients are summed over up to ``num_batches`` shuffled batches.
    """
    from subnets.data import batches

    if method in ("l1", "l1_bn"):
        # Per-group mean 1: raw weight norms are not comparable across layers (see normalize).
        scores = importance.l1(net.graph, variables, fold_norm=method == "l1_bn")
        return importance.normalize(scores), None
    if method == "random":
        return importance.random(net.graph, key=key), None
    if method != "taylor":
        raise ValueError(f"score must be one of {SCORERS}, got {method!r}")
    bs = min(batch_size, len(x))
    stream = (b for i, b in enumerate(batches(x, y, bs, key=key)) if i < num_batches)
    sal = importance.saliency(net, variables, stream)
    return importance.from_saliency(net.graph, variables, sal), sal


def build_family(net: Any, variables: Mapping, scores: Mapping[str, Any],
                 budgets: Sequence[float], *, order: str = "bottom_up", resource: str = "macs",
                 min_units: int = 2, objective: str = "units", cost_model: str = "coupled",
                 kernel_scores: Mapping | None = None,
                 levels: Sequence[Mapping[str, int]] | None = None,
                 min_fraction: float = 0.0) -> Family:
    """Permute by ``scores``, pick nested widths per budget, return the Family (full level last).

    Args:
        net: the model (any :class:`~subnets.models.Model`); ``select_widths`` needs its free
            groups to form a chain, explicit ``levels`` do not.
        variables: the trained, UNpermuted variables.
        scores: importance per free group (any scorer of :mod:`subnets.importance`).
        budgets: fractions (<= 1) or absolute amounts of ``resource``; sorted ascending.
        order: ``"bottom_up"`` (REDS) or ``"top_down"``; both give nested levels.
        resource, min_units, min_fraction, objective: passed to ``select_widths``.
        cost_model: ``"coupled"`` (exact) or ``"full_fanin"`` (the reference's approximation).
        kernel_scores: per-kernel scores (unpermuted, ``[in, out]``) for ``objective="kernels"``.
        levels: fixed widths, one per budget (smallest first), instead of solving the knapsack:
            then ``scores`` only decide WHICH units each width keeps (the order ablation: L1 or
            random order at the widths REDS chose).

    References:
        Corti et al., REDS (arXiv:2311.13349), Sec. 3.1-3.3.
    """
    from subnets.nested.select import select_widths

    if order not in ("bottom_up", "top_down"):
        raise ValueError(f"a Family needs nested levels: order must be 'bottom_up' or "
                         f"'top_down', got {order!r}")
    budgets = sorted(float(b) for b in budgets)
    full = net.graph.full_widths()
    if levels is None:
        levels = select_widths(net, scores, budgets, resource=resource, order=order,
                               min_units=min_units, objective=objective, cost=cost_model,
                               kernel_scores=kernel_scores, min_fraction=min_fraction)
    else:
        levels = [{**full, **lv} for lv in levels]
        extra = len(levels) - len(budgets)
        if extra not in (0, 1) or (extra == 1 and levels[-1] != full):
            raise ValueError(f"levels: {len(levels)} width maps for {len(budgets)} budgets "
                             "(one per budget, optionally followed by the full widths)")
        # Family checks the groups, the ranges and the nesting.
    if not levels or levels[-1] != full:
        levels = [*levels, full]
    permuted = permute(net.graph, variables, importance.permutation(scores))
    stats = permuted.get("batch_stats")
    # Per-level statistics from the start (all equal to the trained ones), so fine-tuning can
    # swap in per-level statistics without changing the executables' argument structure.
    level_stats = [stats] * len(levels) if stats else None
    return Family(net, permuted, levels, level_batch_stats=level_stats)


def accuracy(family: Family, level: int, x: np.ndarray, y: np.ndarray, *,
             batch_size: int = 500) -> float:
    """Top-1 accuracy of one level, through its compiled executable (last batch padded)."""
    if len(x) == 0:
        raise ValueError("accuracy of an empty test set")
    bs = min(batch_size, len(x))
    correct = 0
    for i in range(0, len(x), bs):
        xb = x[i : i + bs]
        n = len(xb)
        if n < bs:
            xb = np.concatenate([xb, np.repeat(xb[-1:], bs - n, axis=0)])
        pred = np.argmax(np.asarray(family.apply(xb, level)), axis=-1)[:n]
        correct += int((pred == y[i : i + n]).sum())
    return correct / len(x)


def level_report(family: Family, x: np.ndarray, y: np.ndarray) -> list[dict]:
    """Per level: widths, true MACs (and fraction), params, bytes, accuracy."""
    net = family.net
    full_macs = cost.macs(net)
    out = []
    for i, widths in enumerate(family.levels):
        m = cost.macs(net, widths)
        out.append({"level": i, "widths": widths, "macs": m, "macs_fraction": m / full_macs,
                    "params": cost.params(net, widths),
                    "bytes_float32": cost.bytes(net, widths),
                    "bytes_int8": cost.bytes(net, widths, np.int8),
                    "accuracy": accuracy(family, i, x, y)})
    return out


def train_base(cfg: NestConfig, net: Any, train: tuple[np.ndarray, np.ndarray],
               out_dir: str | os.PathLike | None, *, progress: bool = True,
               mesh: Any = None) -> tuple[dict, bool]:
    """Train the base model or restore it from ``out_dir/base`` (orbax): ``(variables, loaded)``.

    ``mesh`` shards every batch over a device mesh (:func:`subnets.parallel.data_mesh`).
    """
    from subnets import checkpoint
    from subnets.train import default_optimizer, fit

    ck = Path(out_dir) / "base" if out_dir is not None else None
    identity = {k: getattr(cfg, k) for k in BASE_KEYS}
    if cfg.lr is not None:  # recorded only when set, so earlier base checkpoints still match
        identity["lr"] = cfg.lr
    if ck is not None and checkpoint.exists(ck):
        tree, meta = checkpoint.restore(ck)
        diff = [f"{k} ({meta.get(k, '<unset>')!r} in the checkpoint, {v!r} now)"
                for k, v in identity.items() if meta.get(k, "<unset>") != v]
        if diff:
            raise ValueError(f"checkpoint {ck} was trained with other settings: "
                             f"{', '.join(diff)}; use another --out or --force")
        net.graph.validate(tree)
        return tree, True
    key = jax.random.key(cfg.seed)
    variables = net.init(jax.random.fold_in(key, 0))
    if cfg.epochs > 0:
        x = train[0]
        tx = (None if cfg.lr is None else default_optimizer(
            cfg.epochs * max(1, len(x) // min(cfg.batch_size, len(x))), cfg.lr))
        variables = fit(net, variables, *train, epochs=cfg.epochs, batch_size=cfg.batch_size,
                        tx=tx, key=jax.random.fold_in(key, 1), progress=progress, desc="base",
                        checkpoint_dir=None if ck is None else ck.with_name("base_training"),
                        mesh=mesh)
    if ck is not None:
        checkpoint.save(ck, variables, meta=identity)
    return jax.tree.map(np.asarray, variables), False


def nest(cfg: NestConfig, net: Any, variables: Mapping, train: tuple[np.ndarray, np.ndarray],
         test: tuple[np.ndarray, np.ndarray], *, progress: bool = True,
         levels: Sequence[Mapping[str, int]] | None = None,
         checkpoint_dir: str | os.PathLike | None = None,
         on_saved: Callable[[str], Any] | None = None,
         mesh: Any = None) -> tuple[Family, dict]:
    """Score, permute, select, fine-tune and evaluate from trained ``variables``.

    ``levels`` fixes the widths (see :func:`build_family`); the scores then only set the order.
    With ``checkpoint_dir``, the selection (permuted variables, levels, accuracies before
    fine-tuning) is saved in ``checkpoint_dir/selection`` and fine-tuning after every epoch in
    ``checkpoint_dir/finetune``; a rerun of the same settings restores the selection instead of
    scoring again and resumes fine-tuning after its last saved epoch (bit-identical to an
    uninterrupted run). A stage saved with other settings is recomputed and overwritten.
    ``on_saved`` is told (a sentence) after each of those saves. ``mesh`` shards the joint
    fine-tuning's batches over a device mesh.
    """
    from subnets.nested.finetune import finetune

    key = jax.random.key(cfg.seed)
    ck = None if checkpoint_dir is None else Path(checkpoint_dir)
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "data_dir"}
    config["levels"] = None if levels is None else [dict(lv) for lv in levels]
    if ck is not None:
        from subnets.runs import fingerprint

        config["base"] = fingerprint(*jax.tree.leaves(variables))
    config = json.loads(json.dumps(config))
    selection = {k: v for k, v in config.items() if k not in ("finetune_epochs", "distill")}
    saved = None if ck is None else _restore_selection(ck / "selection", selection, net)
    if saved is not None:
        family, before, timings = saved
    else:
        family, before, timings = _select(cfg, net, variables, train, test, key, levels)
        if ck is not None:
            _save_selection(ck / "selection", selection, family, before, timings)
            if on_saved is not None:
                on_saved(f"the scored selection ({ck / 'selection'})")
    t = time.perf_counter()
    family = finetune(net, family.variables, family.levels, *train, epochs=cfg.finetune_epochs,
                      batch_size=cfg.batch_size, key=jax.random.fold_in(key, 3),
                      distill=cfg.distill, progress=progress, family=family,
                      checkpoint_dir=None if ck is None else ck / "finetune",
                      checkpoint_meta={"config": config}, restart=True, mesh=mesh)
    timings["finetune_s"] = time.perf_counter() - t
    levels = level_report(family, *test)
    budgets = sorted(cfg.budgets)
    for i, rec in enumerate(levels):
        rec["budget"] = budgets[i] if i < len(budgets) else 1.0
        rec["accuracy_before_finetune"] = before[i]
    metrics = {"levels": levels, "timings": timings,
               "family": {"memory_bytes": family.memory_bytes(),
                          "separate_bytes": family.separate_bytes()}}
    return family, metrics


def _select(cfg: NestConfig, net: Any, variables: Mapping, train, test, key: jax.Array,
            levels: Sequence[Mapping[str, int]] | None) -> tuple[Family, list[float], dict]:
    """Score, permute and select: ``(family, accuracies before fine-tuning, timings)``."""
    timings = {}
    t = time.perf_counter()
    scores, sal = score_channels(net, variables, cfg.score, *train, key=jax.random.fold_in(key, 2),
                                 num_batches=cfg.score_batches, batch_size=cfg.batch_size)
    ks = None
    if cfg.objective == "kernels":
        if sal is None:
            raise ValueError("objective='kernels' needs score='taylor' (per-kernel |w*g|)")
        ks = importance.kernel_scores(net, variables, saliency_tree=sal)
    timings["score_s"] = time.perf_counter() - t
    t = time.perf_counter()
    family = build_family(net, variables, scores, cfg.budgets, order=cfg.order,
                          resource=cfg.resource, min_units=cfg.min_units,
                          min_fraction=cfg.min_fraction, objective=cfg.objective,
                          cost_model=cfg.cost, kernel_scores=ks, levels=levels)
    timings["select_s"] = time.perf_counter() - t
    before = [accuracy(family, i, *test) for i in range(len(family))]
    return family, before, timings


def _save_selection(directory: Path, identity: dict, family: Family, before: list[float],
                    timings: dict) -> None:
    from subnets import checkpoint

    checkpoint.save(directory, jax.tree.map(np.asarray, dict(family.variables)),
                    meta={"run": identity, "levels": [dict(lv) for lv in family.levels],
                          "before": [float(a) for a in before], "timings": dict(timings)})


def _restore_selection(directory: Path, identity: dict, net: Any
                       ) -> tuple[Family, list[float], dict] | None:
    """The saved selection as :func:`build_family` made it, or None (none, or other settings)."""
    from subnets import checkpoint

    if not checkpoint.exists(directory):
        return None
    permuted, meta = checkpoint.restore(directory)
    if meta.get("run") != identity:
        return None
    levels = [{k: int(v) for k, v in lv.items()} for lv in meta["levels"]]
    stats = permuted.get("batch_stats")
    family = Family(net, permuted, levels,
                    level_batch_stats=[stats] * len(levels) if stats else None)
    return family, list(meta["before"]), dict(meta["timings"])


def plot(metrics: Mapping, path: str | os.PathLike, *, title: str = "") -> None:
    """Accuracy vs true MACs of every level (before and after fine-tuning) as a PNG.

    Needs matplotlib (the ``plot`` extra; ImportError naming it otherwise). :func:`run` writes
    the PNG as a side product: without matplotlib it skips it with one line saying why.
    """
    levels = metrics["levels"]
    macs = [lv["macs"] / 1e6 for lv in levels]
    with figure(path, xlabel="true MACs (millions)", ylabel="test accuracy (%)",
                title=title) as ax:
        ax.plot(macs, [100 * lv["accuracy"] for lv in levels], "o-", label="fine-tuned")
        if all("accuracy_before_finetune" in lv for lv in levels):
            ax.plot(macs, [100 * lv["accuracy_before_finetune"] for lv in levels], "s--",
                    alpha=0.6, label="permuted, before fine-tuning")
        for lv, m in zip(levels, macs, strict=True):
            ax.annotate(f"{lv.get('budget', 1.0):g}", (m, 100 * lv["accuracy"]),
                        textcoords="offset points", xytext=(0, 6), fontsize=8, ha="center")


def run(cfg: NestConfig, out_dir: str | os.PathLike, *, progress: bool = True,
        log: Callable[[str], Any] = print, model: Any = None, run: Any = None,
        mesh: Any = None) -> dict:
    """The whole pipeline; writes ``metrics.json``, ``family.subnets``, ``accuracy_vs_macs.png``.

    ``model`` (any :class:`~subnets.models.Model`) replaces the zoo's ``cfg.model``. ``run``: an
    open :class:`subnets.runs.Run` (the CLI's), told the data fingerprint and what is saved as
    the pipeline goes. ``mesh``: base training and joint fine-tuning shard every batch over
    this device mesh (:func:`subnets.parallel.data_mesh`); None: one device.

    Returns:
        The metrics dict also written to ``out_dir/metrics.json``.
    """
    if cfg.score not in SCORERS:
        raise ValueError(f"score must be one of {SCORERS}, got {cfg.score!r}")
    if not cfg.budgets or any(b <= 0 for b in cfg.budgets):
        raise ValueError(f"budgets must be positive, got {cfg.budgets}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    net = make_net(cfg) if model is None else model
    train, test = load_data(cfg)
    if run is not None:
        from subnets.runs import fingerprint

        run.check_data(fingerprint(*train, *test))
    log(f"{cfg.model} on {cfg.data}: {len(train[0])} train / {len(test[0])} test examples")
    t = time.perf_counter()
    if run is not None:
        run.saved = f"the base training state after each finished epoch ({out / 'base_training'})"
    variables, loaded = train_base(cfg, net, train, out, progress=progress, mesh=mesh)
    base_s = time.perf_counter() - t
    if run is not None:
        run.mark_saved(f"the base model ({out / 'base'})")
        run.saved = (f"the base model ({out / 'base'}); the scored selection and fine-tuning "
                     f"after each epoch as they finish ({out / 'selection'}, {out / 'finetune'})")
    log(f"base model {'loaded from ' + str(out / 'base') if loaded else 'trained'}")
    family, metrics = nest(cfg, net, variables, train, test, progress=progress, checkpoint_dir=out,
                           on_saved=None if run is None else
                           (lambda what: run.mark_saved(f"the base model and {what}")),
                           mesh=mesh)
    # The permutation keeps the function, so the full level before fine-tuning IS the base.
    base_acc = metrics["levels"][-1]["accuracy_before_finetune"]
    metrics["timings"]["base_s"] = base_s
    metrics["timings"]["total_s"] = time.perf_counter() - t0
    metrics = {"config": dataclasses.asdict(cfg), "model": describe(net)["model"],
               "data": cfg.data,
               "base": {"accuracy": base_acc, "macs": cost.macs(net), "params": cost.params(net),
                        "loaded": loaded}, **metrics}
    for lv in metrics["levels"]:
        log(f"  budget {lv['budget']:<5g} MACs {lv['macs']:>10,} ({lv['macs_fraction']:.1%})  "
            f"accuracy {lv['accuracy']:.4f} "
            f"(before fine-tuning {lv['accuracy_before_finetune']:.4f})")
    family.save(out / "family.subnets", meta={"base_accuracy": base_acc})
    write_json(out / "metrics.json", metrics, nonfinite="null")
    png = side_plot(lambda p: plot(metrics, p, title=f"REDS {cfg.model} on {cfg.data}"),
                    out / "accuracy_vs_macs.png")
    log(f"wrote {out / 'metrics.json'}, {out / 'family.subnets'}" + (f", {png}" if png else ""))
    return metrics
