"""End-to-end pruning runs (what ``subnets prune`` does): sparse levels -> removed dense models.

For every level (an IMP round, or one pruning-at-init / Reconvene density trained once) the run
records density, parameters and bytes before and after :func:`~subnets.pruning.remove_dead`, and
the test accuracy of the sparse and the removed model (equal: removal is exact, and the run
fails loudly if the predictions differ). It writes to ``out``:

- ``metrics.json``: the config and one row per level;
- ``level_<i>.subnets``: each removed dense model as a plain safetensors file
  (:mod:`subnets.io`, no pickle; ``safetensors.torch.load_file`` reads it), its graph, widths
  and metrics JSON-encoded in the metadata;
- ``portfolio.subnets``: all removed models in one :class:`~subnets.runtime.Portfolio`
  (DEFLATE-compressed variants).

Example:
    >>> from subnets.pruning.pipeline import PruneConfig, run_pruning
    >>> cfg = PruneConfig(method="pai", model="dnn-s", data="digits", densities=(0.3,),
    ...                   epochs=1, limit=256, batch_size=64, progress=False)
    >>> import tempfile; out = tempfile.mkdtemp()
    >>> m = run_pruning(cfg, out)
    >>> m["levels"][0]["accuracy_sparse"] == m["levels"][0]["accuracy_removed"]
    True

References:
    Eccles et al., DNNShifter (arXiv:2309.06973); Eccles et al., Reconvene (arXiv:2404.16877);
    Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path as FsPath
from typing import Any

import jax
import numpy as np

from subnets import checkpoint, io, train
from subnets.data.train_test import load_train_test
from subnets.pruning.imp import imp, make_train_fn
from subnets.pruning.masked import apply_masks, masked
from subnets.pruning.pai import METHODS as PAI_SCORES
from subnets.pruning.pai import prune_at_init
from subnets.pruning.reconvene import default_prunable, reconvene
from subnets.pruning.remove import remove_dead
from subnets.runtime import Portfolio

PRUNE_METHODS = ("imp", "pai", "reconvene")


@dataclass(frozen=True)
class PruneConfig:
    """One pruning run.

    Attributes:
        method: ``"imp"`` (DNNShifter's sparse models), ``"pai"`` or ``"reconvene"``.
        model, data: zoo model and data set names.
        levels, fraction, rewind_step: IMP levels after the dense one, share of remaining
            weights pruned per level, rewind point in steps.
        densities: one level per density for ``pai`` and ``reconvene``.
        pai_score: PaI criterion (``magnitude``, ``random``, ``snip``, ``grasp``, ``synflow``).
        epochs, batch_size, lr: training (Adam with cosine decay).
        limit: use only the first ``limit`` training and test examples.
        seed: the run's randomness.
        norm: override the model's norm.
        progress: progress bars.
    """

    method: str = "imp"
    model: str = "ds-cnn-s"
    data: str = "default"
    levels: int = 3
    fraction: float = 0.2
    rewind_step: int = 0
    densities: tuple[float, ...] = (0.5, 0.2, 0.1)
    pai_score: str = "synflow"
    epochs: int = 1
    batch_size: int = 128
    lr: float = 1e-3
    limit: int | None = None
    seed: int = 0
    norm: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in PRUNE_METHODS:
            raise ValueError(f"method must be one of {PRUNE_METHODS}, got {self.method!r}")
        if self.pai_score not in PAI_SCORES:
            raise ValueError(f"pai_score must be one of {PAI_SCORES}, got {self.pai_score!r}")
        if self.method == "imp" and self.levels < 0:
            raise ValueError(f"levels must be >= 0, got {self.levels}")
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {self.fraction}")
        if self.method != "imp" and not self.densities:
            raise ValueError("densities must name at least one density")
        for d in self.densities:
            if not 0.0 < d <= 1.0:
                raise ValueError(f"every density must be in (0, 1], got {d}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < self.batch_size:
            raise ValueError(f"limit {self.limit} is smaller than batch_size {self.batch_size}")


def _nbytes(tree: Any) -> int:
    return int(sum(np.asarray(a).nbytes for a in jax.tree.leaves(tree)))


def _count(tree: Any) -> int:
    return int(sum(np.size(a) for a in jax.tree.leaves(tree)))


def level_metrics(net: Any, sparse: dict, masks: dict, xt: np.ndarray, yt: np.ndarray
                  ) -> tuple[dict, dict, dict]:
    """Remove a sparse model's dead structure and measure both sides.

    ``density`` is the kept share of the masked kernels (a Reconvene model's rectified layers
    are dense and carry no mask); ``params_nonzero`` counts every parameter minus the pruned
    ones, ``params_after`` the arrays of the removed model.

    Returns:
        ``(metrics, removed_variables, widths)``.

    Raises:
        RuntimeError: the removed model predicts differently from the sparse one.
    """
    sparse = apply_masks(sparse, masks)
    t0 = time.perf_counter()
    removed, widths = remove_dead(sparse, net)
    removal_s = time.perf_counter() - t0
    logits_s = train.predict(net, sparse, xt)
    logits_r = train.predict(net, removed, xt)
    pred_s, pred_r = logits_s.argmax(-1), logits_r.argmax(-1)
    acc_s = float(np.mean(pred_s == yt))
    acc_r = float(np.mean(pred_r == yt))
    if not np.array_equal(pred_s, pred_r):
        raise RuntimeError(f"{int(np.sum(pred_s != pred_r))} test predictions changed when dead "
                           f"structure was removed (accuracy {acc_s:.4f} -> {acc_r:.4f})")
    zeros = sum(int(np.size(m) - np.sum(np.asarray(m))) for m in masks.values())
    params = _count(sparse["params"])
    kernels = sum(int(np.size(m)) for m in masks.values())
    metrics = {
        "density": 1.0 - zeros / kernels if kernels else 1.0,
        "params_before": params, "params_nonzero": params - zeros,
        "bytes_before": _nbytes(sparse), "params_after": _count(removed["params"]),
        "bytes_after": _nbytes(removed), "accuracy_sparse": acc_s, "accuracy_removed": acc_r,
        "max_logit_diff": float(np.max(np.abs(logits_s - logits_r))) if len(xt) else 0.0,
        "removal_seconds": removal_s, "widths": {k: int(v) for k, v in widths.items()},
    }
    return metrics, removed, widths


def _train_masked(cfg: PruneConfig, net: Any, variables: dict, masks: dict, x, y, key, desc,
                  mesh: Any = None):
    steps = cfg.epochs * max(1, len(x) // cfg.batch_size)
    tx = masked(train.default_optimizer(steps, cfg.lr), masks)
    return train.fit(net, apply_masks(variables, masks), x, y, epochs=cfg.epochs,
                     batch_size=cfg.batch_size, tx=tx, key=key, progress=cfg.progress,
                     desc=desc, mesh=mesh)


def _save_level(directory: FsPath, lv: dict) -> None:
    paths = list(lv["masks"])
    tree = {"variables": lv["variables"],
            "masks": {f"{i:06d}": np.asarray(lv["masks"][p]) for i, p in enumerate(paths)}}
    checkpoint.save(directory, tree, meta={"name": lv["name"], "extra": _jsonable(lv["extra"]),
                                           "mask_paths": [list(p) for p in paths]})


def _load_level(directory: FsPath) -> dict:
    tree, meta = checkpoint.restore(directory)
    masks = {tuple(p): tree["masks"][f"{i:06d}"] for i, p in enumerate(meta["mask_paths"])}
    return {"name": meta["name"], "variables": tree["variables"], "masks": masks,
            "extra": meta["extra"]}


def sparse_levels(cfg: PruneConfig, net: Any, x: np.ndarray, y: np.ndarray, *, key: jax.Array,
                  checkpoint_dir: str | FsPath | None = None,
                  on_saved: Callable[[str], Any] | None = None, mesh: Any = None) -> list[dict]:
    """Train the run's sparse models: ``[{"name", "variables", "masks", "extra"}, ...]``.

    With ``checkpoint_dir``, every finished level is checkpointed (``checkpoint_dir/level_<i>``)
    and restored instead of retrained on a rerun: each pruning-at-init / Reconvene level has its
    own keys; IMP rounds are sequential, so a rerun restores the finished ones and resumes the
    interrupted round from its last epoch (``checkpoint_dir/level_<i>_training``, see
    :func:`~subnets.pruning.imp`). Either way a resumed run is bit-identical. ``on_saved`` is
    told (a sentence) after every level checkpoint. ``mesh`` shards every training batch over a
    device mesh (:func:`subnets.parallel.data_mesh`).
    """
    def saved(name: str) -> None:
        if on_saved is not None and checkpoint_dir is not None:
            on_saved(f"{name} and the levels before it ({FsPath(checkpoint_dir)})")

    k_init, k_run = jax.random.split(key)
    v0 = net.init(k_init)
    out = []
    if cfg.method == "imp":
        fn = make_train_fn(net, x, y, epochs=cfg.epochs, batch_size=cfg.batch_size,
                           optimizer=train.default_optimizer(
                               cfg.epochs * max(1, len(x) // cfg.batch_size), cfg.lr),
                           rewind_step=cfg.rewind_step, progress=cfg.progress, mesh=mesh)
        for lv in imp(net, v0, train_fn=fn, levels=cfg.levels, fraction=cfg.fraction,
                      rewind_step=cfg.rewind_step, key=k_run, checkpoint_dir=checkpoint_dir,
                      on_round=lambda lv: saved(f"IMP round {lv.level} of {cfg.levels}")):
            out.append({"name": f"level_{lv.level}", "variables": lv.variables,
                        "masks": lv.masks, "extra": {}})
        return out
    xs, ys = x[: cfg.batch_size], y[: cfg.batch_size]
    for i, (d, k) in enumerate(zip(cfg.densities, jax.random.split(k_run, len(cfg.densities)),
                                   strict=True)):
        ck = None if checkpoint_dir is None else FsPath(checkpoint_dir) / f"level_{i}"
        if ck is not None and checkpoint.exists(ck):
            out.append(_load_level(ck))
            continue
        k_prune, k_train = jax.random.split(k)
        t0 = time.perf_counter()
        if cfg.method == "pai":
            # The same kernels as Reconvene, so the two methods compare like for like.
            masks = prune_at_init(net, v0, xs, ys, density=d, method=cfg.pai_score,
                                  key=k_prune, prunable=default_prunable(net))
            start, extra = v0, {}
        else:
            r = reconvene(net, v0, xs, ys, density=d, method=cfg.pai_score, key=k_prune)
            start, masks = r.variables, r.masks
            extra = {"reconvene": {k2: r.report[k2] for k2 in (
                "global_sparsity", "params_dense", "params_nonzero", "compression")},
                "reconvene_layers": r.report["layers"]}
        extra["prune_seconds"] = time.perf_counter() - t0
        trained = _train_masked(cfg, net, start, masks, x, y, k_train,
                                f"{cfg.method} d={d:g}", mesh=mesh)
        out.append({"name": f"level_{i + 1}", "variables": trained, "masks": masks,
                    "extra": {"target_density": d, **extra}})
        if ck is not None:
            _save_level(ck, out[-1])
            saved(f"level {i + 1} of {len(cfg.densities)}")
    return out


def run_pruning(cfg: PruneConfig, out: str | FsPath, *, model: Any = None,
                run: Any = None, mesh: Any = None) -> dict:
    """Run ``cfg``, write metrics, removed models and a portfolio to ``out``; return metrics.

    Args:
        cfg: the run.
        out: output folder.
        model: the :class:`~subnets.models.Model` to prune (default: the zoo's ``cfg.model``
            sized for the data). Saved levels store its graph, so they load without it.
        run: an open :class:`subnets.runs.Run` (the CLI's), told what is saved as the run goes.
        mesh: shard every training batch over this device mesh
            (:func:`subnets.parallel.data_mesh`); None: one device.

    Example: see the module docstring.
    """
    out = FsPath(out)
    out.mkdir(parents=True, exist_ok=True)
    (x, y), (xt, yt) = load_train_test(cfg.data, limit=cfg.limit)
    classes = int(max(y.max(), yt.max())) + 1
    if model is None:
        from subnets.models import zoo

        model = zoo.create(cfg.model, num_classes=classes, input_shape=x.shape[1:],
                           norm=cfg.norm)
    net = model
    t0 = time.perf_counter()
    if run is not None:
        during = " and the running round after each epoch" if cfg.method == "imp" else ""
        run.saved = f"every finished level{during} ({out / 'checkpoints'})"
    levels = sparse_levels(cfg, net, x, y, key=jax.random.key(cfg.seed),
                           checkpoint_dir=out / "checkpoints",
                           on_saved=None if run is None else run.mark_saved, mesh=mesh)
    train_s = time.perf_counter() - t0
    portfolio = Portfolio(model=net)
    graph = net.graph.to_dict()
    rows = []
    for lv in levels:
        metrics, removed, widths = level_metrics(net, lv["variables"], lv["masks"], xt, yt)
        row = {"name": lv["name"], **metrics, **lv["extra"]}
        meta = {"graph": graph, "input_shape": [int(s) for s in x.shape[1:]],
                "widths": row["widths"], "accuracy": row["accuracy_removed"],
                "params": row["params_after"], "density": row["density"]}
        io.save(out / f"{lv['name']}.subnets", removed, meta=meta)
        portfolio.add(lv["name"], removed, meta=meta)
        rows.append(row)
    portfolio.save(out / "portfolio.subnets")
    result = {"config": asdict(cfg), "num_classes": classes, "train_examples": len(x),
              "test_examples": len(xt), "train_seconds": train_s,
              "portfolio": {"memory_bytes": portfolio.memory_bytes(),
                            "dense_bytes": portfolio.dense_bytes(),
                            "file_bytes": (out / "portfolio.subnets").stat().st_size},
              "levels": rows}
    io.write_json(out / "metrics.json", _jsonable(result), nonfinite="null", indent=2)
    return result


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def load_level(path: str | FsPath, *, model: Any = None) -> tuple[Any, dict, dict]:
    """Read a removed model written by :func:`run_pruning`: ``(model, variables, meta)``.

    With no ``model`` it runs on the stored graph (:func:`subnets.models.from_graph`); files of
    earlier versions (subnets-v1, DEFLATE-compressed, or naming a zoo model instead of storing
    the graph) still load.
    """
    from subnets.graph import ChannelGraph
    from subnets.models import from_graph, zoo

    variables, meta = io.load(path)
    if model is None:
        try:
            if "graph" in meta:
                model = from_graph(ChannelGraph.from_dict(meta["graph"]))
            else:
                model = zoo.from_meta(meta)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: metadata holds no usable graph or zoo model ({e}); "
                             "not written by subnets prune") from None
    model.graph.validate(variables, widths=model.graph.widths_of(variables))
    return model, variables, meta
