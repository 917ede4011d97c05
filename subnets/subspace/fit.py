"""The LCS training loop with orbax checkpoints and resume, and subspace save/load.

A run checkpoints after every epoch into ``checkpoint_dir`` (the whole :class:`SubspaceState`
plus JSON metadata). Calling :func:`fit` again with the same directory resumes after the last
finished epoch; batch order and level draws come from ``key`` folded with the epoch and step,
so a resumed run continues exactly as the uninterrupted one would.

Example:
    >>> import jax, numpy as np, tempfile, subnets
    >>> from subnets import subspace
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> s = subspace.init_point(net, key=jax.random.key(0), compression="unstructured")
    >>> d = tempfile.mkdtemp()
    >>> subspace.save(d + "/s", s, meta={"model": "dnn-s"})
    >>> t, meta = subspace.load(d + "/s")
    >>> t.compression, meta["model"]
    ('unstructured', 'dnn-s')

References:
    Nunez et al., LCS (arXiv:2110.04252); orbax-checkpoint (PyTreeCheckpointer).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from subnets import checkpoint, parallel
from subnets import log as _log
from subnets._finite import check_finite
from subnets.data.source import Source, training_source
from subnets.subspace.compress import ACT_RANGES, init_act_ranges
from subnets.subspace.core import Subspace
from subnets.subspace.train import (
    LCSConfig,
    SubspaceState,
    default_config,
    default_optimizer,
    init_state,
    make_train_step,
)


def save(directory: str | os.PathLike, subspace: Subspace, *, meta: dict | None = None) -> None:
    """Write a subspace (orbax arrays + JSON metadata, including its compression range)."""
    tree = {"base": subspace.base}
    if subspace.end:
        tree["end"] = subspace.end
    info = {**(meta or {}), "compression": subspace.compression, "low": subspace.low,
            "high": subspace.high, "kind": subspace.kind}
    checkpoint.save(directory, tree, meta=info)


def load(directory: str | os.PathLike) -> tuple[Subspace, dict]:
    """Read a subspace written by :func:`save`; returns ``(subspace, meta)``."""
    tree, meta = checkpoint.restore(directory)
    missing = [k for k in ("compression", "low", "high") if k not in meta]
    if missing or "base" not in tree:
        raise ValueError(f"{directory} is not a saved subspace (missing {missing or ['base']})")
    return Subspace(tree["base"], tree.get("end", {}), meta["compression"], meta["low"],
                    meta["high"]), meta


def _save_state(directory: Path, state: SubspaceState, meta: dict) -> None:
    if not parallel.is_primary():
        return  # a multi-process run writes its checkpoint once
    meta = dict(meta)
    checkpoint.save_state(directory, parallel.to_host(state), epoch=meta.pop("epoch"),
                          epochs=meta.pop("epochs"), meta=meta)


def fit(net: Any, subspace: Subspace, x: np.ndarray | Source, y: np.ndarray | None = None, *,
        epochs: int,
        batch_size: int = 128, key: jax.Array, config: LCSConfig | None = None,
        tx: optax.GradientTransformation | None = None, lr: float = 0.1,
        warmup_epochs: int = 0, checkpoint_dir: str | os.PathLike | None = None,
        mesh=None, progress: bool = True, desc: str = "lcs",
        on_epoch: Callable[[int, Subspace], None] | None = None) -> Subspace:
    """Train ``subspace`` for ``epochs`` over ``(x, y)``; returns the trained subspace.

    Args:
        net: the zoo net the subspace belongs to.
        subspace: initial point or line (:func:`init_point`, :func:`init_line`).
        x, y: training inputs and integer labels, or (``y`` None) a pipeline of ``(x, y)`` /
            ``{"image", "label"}`` batches or a callable ``epoch -> iterable``
            (:func:`subnets.data.as_source`) whose length is known (``len(data)`` or
            ``as_source(data, steps_per_epoch=N)``: the level warm-up is scheduled in steps).
        epochs, batch_size: run length (every batch has the same shape: one compilation;
            a pipeline's own batches are used, and a new batch shape compiles again).
        key: drives batch order and level sampling.
        config: sampling/warm-up (default: :func:`default_config`).
        tx: optimiser (default: the reference's SGD with cosine decay at ``lr`` and
            ``warmup_epochs`` of linear warm-up).
        checkpoint_dir: save after every epoch and resume from what is there.
        mesh: data-parallel mesh (:func:`data_mesh`), or None for the default device.
        progress: tqdm bar (off when stderr is not a terminal).
        on_epoch: called as ``on_epoch(epoch, subspace)`` after each epoch (and checkpoint).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    src = training_source(net, x, y, batch_size=batch_size, who="subspace.fit")
    src.check_epochs(epochs)
    if src.is_arrays:
        steps_per_epoch = src.num_examples // src.batch_size
        if steps_per_epoch < 1:
            raise ValueError(f"batch_size {src.batch_size} exceeds the {src.num_examples} "
                             "training examples")
    elif src.steps_per_epoch is None:
        raise src.unknown_steps("LCS schedules its level warm-up in steps")
    else:
        steps_per_epoch = src.steps_per_epoch
    total = epochs * steps_per_epoch
    config = config or default_config(subspace.compression)
    tx = tx or default_optimizer(total, lr=lr, warmup_steps=warmup_epochs * steps_per_epoch)
    if (subspace.compression == "quantized" and config.act_quant
            and ACT_RANGES not in subspace.base):
        # Running activation ranges, as the reference keeps: outputs at deployment then do
        # not depend on what else is in the batch.
        subspace = init_act_ranges(net, subspace, src.first_batch()[0])
    state = init_state(subspace, tx, mesh=mesh)
    start = 0
    ck = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ck is not None and checkpoint.exists(ck):
        # Typed like the fresh state (JAX arrays, its shardings): the step does not recompile.
        state, start = checkpoint.restore_state(ck, state, epochs=epochs)
    step = make_train_step(net, tx, config, total_steps=total, mesh=mesh,
                           compression=subspace.compression)
    bar = _progress(total, start * steps_per_epoch, desc, progress)
    epoch_keys = jax.random.split(key, epochs)
    record = _log.EpochLog(desc, epochs=epochs, num_classes=getattr(net, "num_classes", None),
                           quiet=not progress)
    for epoch in range(start, epochs):
        data_key, level_key = jax.random.split(epoch_keys[epoch])
        total, n = 0.0, 0
        for xb, yb in src.epoch(epoch, data_key):
            state, metrics = step(state, xb, yb, level_key)
            check_finite(metrics["loss"], step=int(state.step), epoch=epoch + 1)
            total, n = total + metrics["loss"], n + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(metrics['loss']):.3f}", refresh=False)
        acc = evaluate_levels(net, jax.tree.map(np.asarray, state.subspace), *src.sample(),
                              levels=_ends(state.subspace))
        record.epoch(epoch + 1, loss=float(total) / n,
                     accuracy=acc[max(acc)], accuracy_low_end=acc[min(acc)])
        if ck is not None:
            _save_state(ck, state, {"epoch": epoch + 1, "epochs": epochs,
                                    "step": int(parallel.to_host(state.step)),
                                    "train_step": step.kind})
        if on_epoch is not None:
            on_epoch(epoch + 1, state.subspace)
    if bar is not None:
        bar.close()
    record.close()
    return parallel.to_host(state.subspace)


def _ends(subspace: Subspace) -> tuple:
    """The trained range's two ends as levels (bits are integers)."""
    cast = int if subspace.compression == "quantized" else float
    return (cast(subspace.high), cast(subspace.low))


def _progress(total: int, initial: int, desc: str, enabled: bool):
    if not enabled or not _log.stderr_is_terminal():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


DEFAULT_LEVELS = {"structured": (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25),
                  "unstructured": (1.0, 0.75, 0.5, 0.25, 0.1, 0.05, 0.025),
                  "quantized": (8, 7, 6, 5, 4, 3)}


def evaluate_levels(net: Any, subspace: Subspace, x: np.ndarray, y: np.ndarray,
                    levels=None, *, batch_size: int = 500, act_quant: bool = True,
                    out_of_range: str = "error") -> dict:
    """Top-1 accuracy at each level (default: the paper's grid within the trained range),
    deployed by :func:`at_level`.

    Quantised subspaces are evaluated with activations fake-quantised to the same bits (as
    trained after warm-up), over the running ranges training kept, unless ``act_quant`` is
    false. Levels outside the trained range are refused unless ``out_of_range`` says
    otherwise (see :func:`~subnets.subspace.compress.check_level`).

    Returns:
        ``{level: accuracy}``.
    """
    from subnets.subspace.compress import act_quant_apply, at_level

    kind = subspace.compression
    if levels is None:  # the paper's grid, within the range this subspace was trained on
        levels = tuple(v for v in DEFAULT_LEVELS[kind]
                       if subspace.low - 1e-9 <= v <= subspace.high + 1e-9)
    arg = {"structured": "width", "unstructured": "density", "quantized": "bits"}[kind]
    quant = kind == "quantized" and act_quant
    fn = jax.jit(lambda v, xb, b: act_quant_apply(net, v, xb, b) if quant else net.apply(v, xb))
    out = {}
    for level in levels:
        v = at_level(subspace, net, **{arg: level}, out_of_range=out_of_range)
        correct = 0
        for i in range(0, len(x), batch_size):
            logits = fn(v, x[i:i + batch_size], np.float32(level))
            correct += int(np.sum(np.argmax(np.asarray(logits), -1) == y[i:i + batch_size]))
        out[level] = correct / max(1, len(x))
    return out
