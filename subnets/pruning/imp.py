"""Iterative magnitude pruning with rewinding: the lottery-ticket procedure DNNShifter uses.

Level 0 trains the dense network and remembers the weights at step ``rewind_step`` (the
rewind point; step 0 is the initialisation). Every further level removes ``fraction`` of the
weights that are still remaining, smallest magnitude first (one global ranking over all
prunable kernels, or per layer), resets the survivors to the rewind point, and trains again
with the mask held fixed by :func:`subnets.pruning.masked_optimizer`. Every level's trained
sparse model is kept: that list is the raw material DNNShifter turns into smaller dense models.

Pruning counts are exact: a level prunes ``ceil(fraction * remaining)`` weights (globally, or
per layer with ``scope="layer"``) through the score-to-mask step shared with pruning at init
(:func:`subnets.pruning.scoring.keep_masks`), whose per-layer floor keeps a global ranking
from emptying a layer. Ties in magnitude are broken by position (earlier layers, then lower
flat index, are pruned first): deterministic on every device, unlike OpenLTH's
``abs > threshold`` which prunes every tied weight and one extra.

Example:
    >>> import jax, numpy as np, subnets
    >>> from subnets.pruning import imp, make_train_fn
    >>> net = subnets.zoo.create("dnn-s", num_classes=2, input_shape=(8,))
    >>> x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> fn = make_train_fn(net, x, y, epochs=1, batch_size=32, progress=False)
    >>> out = imp(net, net.init(jax.random.key(0)), train_fn=fn, levels=2,
    ...           key=jax.random.key(1))
    >>> [round(lv.density, 2) for lv in out]
    [1.0, 0.8, 0.64]

References:
    Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019); Frankle et al., Linear Mode
    Connectivity and the Lottery Ticket Hypothesis (ICML 2020) for rewinding; Eccles et al.,
    DNNShifter (arXiv:2309.06973), Sec. 3.1.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from subnets import checkpoint, parallel
from subnets import train as _train
from subnets.data.source import Source, training_source
from subnets.graph import Path, get_path
from subnets.pruning.masked import Masks, apply_masks, density, masked_optimizer
from subnets.pruning.scoring import DEFAULT_FLOOR, Floor, keep_masks, out_axes
from subnets.runs import fingerprint
from subnets.transforms import prunable_paths

TrainFn = Callable[..., tuple[dict, dict]]


@dataclass(frozen=True)
class ImpLevel:
    """One IMP level: its masks and the trained sparse variables (masked weights exactly 0).

    Attributes:
        level: 0 for the dense run, then 1, 2, ...
        density: fraction of prunable weights kept.
        masks: ``{full kernel path: bool keep-mask}``.
        variables: the trained sparse model.
        metrics: ``{"density", "remaining"}`` plus whatever ``eval_fn`` returned.
    """

    level: int
    density: float
    masks: Masks
    variables: dict
    metrics: dict = field(default_factory=dict)


def magnitude_prune(variables: Mapping, masks: Mapping[Path, Any], fraction: float, *,
                    scope: str = "global", floor: Floor | None = DEFAULT_FLOOR,
                    warn: bool = True, axes: Mapping[Path, int] | None = None) -> Masks:
    """Remove ``ceil(fraction * remaining)`` of the remaining weights, smallest ``|w|`` first.

    Args:
        variables: trained variables whose kernels are ranked.
        masks: current keep-masks (their paths are the prunable kernels).
        fraction: in [0, 1).
        scope: ``"global"`` (one ranking over all kernels) or ``"layer"`` (each kernel alone).
        floor: the per-layer collapse guard (None: a pure ranking); a layer never drops
            below it (nor is revived to reach it), so the count is exact while the floors fit.
        warn: warn about layers pruned past the collapse threshold.
        axes: ``{path: output-channel axis}`` for the floor
            (:func:`~subnets.pruning.scoring.out_axes`; default the last axis).

    Returns:
        New masks, each a subset of the old one.

    Example:
        >>> import numpy as np
        >>> v = {"params": {"a": {"kernel": np.array([[1., 2.], [3., 4.]])}}}
        >>> m = magnitude_prune(v, {("params", "a", "kernel"): np.ones((2, 2), bool)}, 0.5)
        >>> m[("params", "a", "kernel")].tolist()
        [[False, False], [True, True]]
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    scores = {}
    for p in masks:
        w = np.abs(np.asarray(get_path(variables, p), np.float32))
        m = np.asarray(masks[p], bool)
        if m.shape != w.shape:
            raise ValueError(f"mask for {'/'.join(p)} does not match its kernel's size")
        scores[p] = np.where(m, w, -np.inf)
    alive = {p: int(np.sum(np.asarray(masks[p]))) for p in masks}
    if scope == "layer":
        k: Any = {p: a - math.ceil(fraction * a) for p, a in alive.items()}
    else:
        k = sum(alive.values()) - math.ceil(fraction * sum(alive.values()))
    new = keep_masks(scores, k, scope=scope, floor=floor, warn=warn, axes=axes)
    return {p: jnp.asarray(new[p] & np.asarray(masks[p], bool)) for p in masks}


def imp(net: Any, variables: Mapping, *, train_fn: TrainFn, levels: int, fraction: float = 0.2,
        scope: str = "global", rewind_step: int = 0, prunable: Iterable[Path] | None = None,
        eval_fn: Callable[[dict], Mapping] | None = None, key: jax.Array,
        floor: Floor | None = DEFAULT_FLOOR, checkpoint_dir: str | os.PathLike | None = None,
        on_round: Callable[[ImpLevel], Any] | None = None) -> list[ImpLevel]:
    """Iterative magnitude pruning with rewinding; returns every level's sparse model.

    Args:
        net: the model (its graph's layers are the default prunable kernels).
        variables: the initial variables.
        train_fn: ``train_fn(variables, masks, *, key) -> (trained, rewind)`` trains with the
            masks held fixed and returns the final variables and those after ``rewind_step``
            steps (see :func:`make_train_fn`).
        levels: pruning levels after the dense level 0 (``levels + 1`` results).
        fraction: share of the remaining weights pruned per level (OpenLTH: 0.2).
        scope: ``"global"`` threshold or per-``"layer"``.
        rewind_step: informational here (the train_fn saves the rewind point); recorded in
            the metrics. The rewind point of level 0 is reused at every level, as in OpenLTH.
        prunable: kernel paths to prune; default every conv/dense kernel, stem and classifier
            included (OpenLTH's ``prunable_layer_names``).
        eval_fn: optional ``eval_fn(variables) -> {name: float}`` merged into each level's metrics.
        key: randomness for training.
        floor: per-layer collapse guard of every pruning step (None: off).
        checkpoint_dir: checkpoint every finished round into ``checkpoint_dir/level_<i>``
            (masks, trained variables, metrics; the rewind point with level 0) and hand
            ``train_fn`` a ``checkpoint_dir=checkpoint_dir/level_<i>_training`` keyword to save
            its training in (:func:`make_train_fn`'s saves every epoch). A rerun with the same
            arguments restores the finished rounds, resumes the interrupted one and ends
            bit-identical to an uninterrupted run; a checkpoint of other settings (levels,
            fraction, scope, rewind step, floor, prunable paths, key, initial variables) is
            refused.
        on_round: called with every finished round's :class:`ImpLevel` (after its checkpoint).

    Returns:
        ``[ImpLevel(0, 1.0, ...), ImpLevel(1, ~0.8, ...), ...]``.

    Raises:
        CheckpointError: ``checkpoint_dir`` holds rounds of other settings (named).
    """
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    paths = [tuple(p) for p in (prunable if prunable is not None else prunable_paths(net))]
    for p in paths:
        get_path(variables, p)  # a clear KeyError naming a bad path
    graph = getattr(net, "graph", None)
    axes = out_axes(graph, paths) if graph is not None else {}
    masks: Masks = {p: jnp.ones(jnp.shape(get_path(variables, p)), bool) for p in paths}
    out: list[ImpLevel] = []
    rewind = None
    ck = None if checkpoint_dir is None else FsPath(checkpoint_dir)
    # Every round's key comes from one split of ``key`` into ``levels + 1``: levels is identity.
    settings = {"levels": int(levels), "fraction": float(fraction), "scope": scope,
                "rewind_step": int(rewind_step),
                "floor": repr(floor), "prunable": [list(p) for p in paths],
                "key": np.asarray(jax.random.key_data(key)).ravel().tolist(),
                "variables": fingerprint(*jax.tree.leaves(variables))}
    for level, level_key in enumerate(jax.random.split(key, levels + 1)):
        saved = None if ck is None else _restore_round(ck / f"level_{level}", settings, paths)
        if saved is not None:
            masks, trained, metrics, rewind_saved = saved
            rewind = rewind_saved if rewind is None else rewind
        else:
            start = apply_masks(variables if rewind is None else rewind, masks)
            kw = {} if ck is None else {"checkpoint_dir": ck / f"level_{level}_training"}
            trained, rewind_point = train_fn(start, masks, key=level_key, **kw)
            if rewind is None:
                rewind = rewind_point
            trained = apply_masks(trained, masks)
            d = density(masks)
            metrics = {"density": d, "remaining": int(sum(int(m.sum()) for m in masks.values())),
                       "rewind_step": rewind_step}
            if eval_fn is not None:
                metrics.update(eval_fn(trained))
            if ck is not None:
                _save_round(ck / f"level_{level}", settings, paths, masks, trained, metrics,
                            rewind if level == 0 else None)
        out.append(ImpLevel(level, density(masks), masks, trained, metrics))
        if on_round is not None:
            on_round(out[-1])
        if level < levels:
            masks = magnitude_prune(trained, masks, fraction, scope=scope, floor=floor,
                                    axes=axes)
    return out


def _save_round(directory: FsPath, settings: dict, paths: list[Path], masks: Masks,
                trained: Mapping, metrics: Mapping, rewind: Mapping | None) -> None:
    """One finished round, committed atomically; its training checkpoint is then obsolete."""
    tree = {"trained": jax.tree.map(np.asarray, dict(trained)),
            "masks": {f"{i:06d}": np.asarray(masks[p]) for i, p in enumerate(paths)}}
    if rewind is not None:
        tree["rewind"] = jax.tree.map(np.asarray, dict(rewind))
    plain = {k: v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v
             for k, v in metrics.items()}
    checkpoint.save(directory, tree, meta={"settings": settings, "metrics": plain,
                                           "rewind": rewind is not None})
    shutil.rmtree(directory.with_name(directory.name + "_training"), ignore_errors=True)


def _restore_round(directory: FsPath, settings: dict, paths: list[Path]):
    """``(masks, trained, metrics, rewind)`` of a finished round, or None if not saved."""
    if not checkpoint.exists(directory):
        return None
    tree, meta = checkpoint.restore(directory)
    old = meta.get("settings", {})
    diff = [f"{k} ({old.get(k)!r} there, {v!r} now)" for k, v in settings.items()
            if old.get(k) != v]
    if diff:
        raise checkpoint.CheckpointError(f"{directory}: an IMP round of other settings: "
                                         f"{', '.join(diff)}")
    masks = {p: jnp.asarray(np.asarray(tree["masks"][f"{i:06d}"], bool))
             for i, p in enumerate(paths)}
    return masks, tree["trained"], meta["metrics"], tree.get("rewind")


def make_train_fn(net: Any, x: np.ndarray | Source, y: np.ndarray | None = None, *, epochs: int,
                  batch_size: int = 128,
                  optimizer: optax.GradientTransformation | None = None, rewind_step: int = 0,
                  progress: bool = True, mesh: Any = None) -> TrainFn:
    """A masked training loop on ``(x, y)`` built on :mod:`subnets.train`, for :func:`imp`.

    The returned ``train_fn(variables, masks, *, key, checkpoint_dir=None)`` trains ``epochs``
    epochs with ``masked_optimizer(optimizer, masks)`` (default: Adam with cosine decay, fresh
    at every call) and returns ``(trained, rewind)``, ``rewind`` being the variables after
    ``rewind_step`` steps (``rewind_step=0``: the variables it was given). With
    ``checkpoint_dir`` it saves the training state after every epoch
    (``checkpoint_dir/training``, see :func:`subnets.train.fit`) and the rewind point when it
    is reached (``checkpoint_dir/rewind``), and resumes from them. ``mesh`` shards
    every batch over a device mesh (:func:`subnets.parallel.data_mesh`), as
    :func:`subnets.train.fit` does. ``x, y`` are arrays or (``y`` None) a pipeline of
    batches (:func:`subnets.data.as_source`); every level trains over it again, so a one-shot
    iterator is refused at the second level: pass a callable ``epoch -> iterator``.

    Example:
        >>> import jax, numpy as np, subnets
        >>> net = subnets.zoo.create("dnn-s", num_classes=2, input_shape=(4,))
        >>> x, y = np.ones((8, 4), "float32"), np.zeros(8, "int32")
        >>> fn = make_train_fn(net, x, y, epochs=1, batch_size=4, rewind_step=1, progress=False)
        >>> v = net.init(jax.random.key(0))
        >>> trained, rewind = fn(v, {}, key=jax.random.key(1))
        >>> bool((rewind["params"]["dense0"]["kernel"] != v["params"]["dense0"]["kernel"]).any())
        True

    References:
        Frankle et al., Linear Mode Connectivity and the Lottery Ticket Hypothesis (ICML 2020).
    """
    if y is not None:
        batch_size = max(1, min(batch_size, len(x)))
    src = training_source(net, x, y, batch_size=batch_size, who="make_train_fn")
    src.check_epochs(epochs)
    steps_per_epoch = src.array_steps() if src.is_arrays else src.steps_per_epoch
    total = None if steps_per_epoch is None else epochs * steps_per_epoch
    if total is not None and not 0 <= rewind_step <= total:
        raise ValueError(f"rewind_step {rewind_step} outside [0, {total}] (the training steps)")
    if rewind_step < 0:
        raise ValueError(f"rewind_step must be >= 0, got {rewind_step}")
    if optimizer is None and total is None:
        raise src.unknown_steps("pass optimizer= (an optax optimiser)")
    base = optimizer or _train.default_optimizer(total)
    steps: dict = {}

    def train_fn(variables: Mapping, masks: Mapping[Path, Any], *, key: jax.Array,
                 checkpoint_dir: str | os.PathLike | None = None):
        sig = tuple(sorted(masks))
        tx = masked_optimizer(base, masks)
        # One compiled step per set of mask paths; the masks themselves ride in the state.
        if sig not in steps:
            steps[sig] = _train.make_train_step(net, tx)
        ck = None if checkpoint_dir is None else FsPath(checkpoint_dir)
        rewind = {"variables": dict(variables) if rewind_step == 0 else None}
        if rewind_step > 0 and ck is not None and checkpoint.exists(ck / "rewind"):
            rewind["variables"] = checkpoint.restore(ck / "rewind")[0]  # resumed past it

        def save_rewind(n: int, state: _train.TrainState) -> None:
            rewind["steps"] = n
            if n == rewind_step:
                rewind["variables"] = (state.variables if mesh is None
                                       else parallel.to_host(state.variables))
                if ck is not None:
                    checkpoint.save(ck / "rewind", jax.tree.map(np.asarray, rewind["variables"]),
                                    meta={"rewind_step": rewind_step})

        trained = _train.fit(net, variables, src, epochs=epochs, batch_size=batch_size, tx=tx,
                             key=key, progress=progress,
                             desc=f"imp density {density(masks):.4f}", on_step=save_rewind,
                             train_step=steps[sig], mesh=mesh,
                             checkpoint_dir=None if ck is None else ck / "training")
        if rewind["variables"] is None:
            raise ValueError(f"make_train_fn: rewind_step {rewind_step} was never reached: the "
                             f"data gave {rewind.get('steps', 0)} training steps")
        return trained, rewind["variables"]

    return train_fn
