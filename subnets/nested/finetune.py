"""Joint fine-tuning of every level of a nested family in one jitted step.

Each level runs as the physically sliced prefix of the shared (permuted) weights, inside one
jitted step: the gradient of every level flows back into the shared arrays, a level costs its
own MACs, and one compilation serves the whole run. (Width masks under ``jax.vmap`` give the
same gradients but cost every level the FULL network's MACs and, on CPU, turn the vmapped
convolutions into slow grouped ones: ~3x slower for DS-CNN-S with four levels.)

The loss is the REDS weighting: per-level cross-entropy weighted by
``sqrt(parameter fraction)``, normalised to sum 1, optionally mixed with in-place distillation
from the largest level (KL to its stop-gradient predictions, as in slimmable networks).

BatchNorm: a narrow level sees different activation statistics from the full one, so each level
keeps its OWN running statistics (stacked along a leading level axis, updated by its own forward
pass in training mode) and the resulting :class:`~subnets.runtime.family.Family` hands level ``i``
its own set. That replaces the reference's separate BatchNorm-only phase: the statistics are
tracked during joint training instead of being re-estimated afterwards.

Example:
    >>> import jax, numpy as np, subnets
    >>> from subnets.nested.finetune import finetune
    >>> net = subnets.zoo.create("dnn-s", num_classes=2, input_shape=(4,))
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> fam = finetune(net, net.init(jax.random.key(0)), [{"h0": 8, "h1": 8, "h2": 8}, {}],
    ...                x, y, epochs=1, batch_size=32, key=jax.random.key(1), progress=False)
    >>> len(fam.levels)
    2

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.4 (joint fine-tuning, sqrt weighting);
    Yu & Huang, Universally Slimmable Networks (ICCV 2019) for in-place distillation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from subnets import checkpoint, cost
from subnets import log as _log
from subnets._finite import check_finite
from subnets.data.source import Source, training_source
from subnets.runtime.family import Family
from subnets.transforms import slice_widths


class JointState(NamedTuple):
    """Shared variables, per-level BatchNorm statistics (leading level axis), optimiser state."""

    variables: dict
    level_batch_stats: Any
    opt_state: Any
    step: jax.Array


class JointTrainer(NamedTuple):
    """``init(variables) -> JointState`` and the jitted ``step(state, x, y)``.

    ``step`` returns ``(state, per_level_losses)``; ``weights`` are the level weights used.
    """

    init: Callable[[Mapping], JointState]
    step: Callable[[JointState, Any, Any], tuple[JointState, jax.Array]]
    weights: np.ndarray


def level_weights(net: Any, levels: Sequence[Mapping[str, int]]) -> np.ndarray:
    """REDS weights: ``sqrt(params(level) / params(full))``, normalised to sum 1.

    Example:
        >>> import subnets
        >>> net = subnets.zoo.create("dnn-s", num_classes=2)
        >>> w = level_weights(net, [{"h0": 16, "h1": 16, "h2": 16}, {}])
        >>> float(w.sum()), bool(w[0] < w[1])
        (1.0, True)
    """
    full = cost.params(net)
    w = np.sqrt([cost.params(net, dict(lv)) / full for lv in levels])
    return w / w.sum()


def default_optimizer(steps: int, lr: float = 1e-3) -> optax.GradientTransformation:
    """Adam at ``lr`` for the first half of ``steps``, then ``lr / 10`` (the REDS schedule)."""
    return optax.adam(optax.piecewise_constant_schedule(lr, {max(1, steps // 2): 0.1}))


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _kl(student: jax.Array, teacher: jax.Array) -> jax.Array:
    t = jax.nn.log_softmax(teacher)
    return jnp.mean(jnp.sum(jnp.exp(t) * (t - jax.nn.log_softmax(student)), axis=-1))


def make_joint_step(net: Any, levels: Sequence[Mapping[str, int]], *,
                    tx: optax.GradientTransformation | None = None,
                    weights: Sequence[float] | None = None, distill: float = 0.0,
                    loss_fn: Callable | None = None) -> JointTrainer:
    """Build the jitted joint step for ``levels`` (nested widths, the largest LAST).

    Args:
        net: a zoo net.
        levels: widths dicts; groups left out are at full width.
        tx: any optax transformation (default: Adam 1e-3, no schedule).
        weights: per-level loss weights (default :func:`level_weights`).
        distill: in [0, 1]; every level but the last minimises
            ``(1 - distill) * CE + distill * KL(last level || level)``.
        loss_fn: ``loss_fn(logits, labels) -> scalar`` (default: mean cross-entropy).

    Returns:
        A :class:`JointTrainer`.

    References:
        Corti et al., REDS (arXiv:2311.13349), Sec. 3.4.
    """
    if not levels:
        raise ValueError("make_joint_step needs at least one level")
    if not 0.0 <= distill <= 1.0:
        raise ValueError(f"distill must be in [0, 1], got {distill}")
    graph = net.graph
    tx = tx or optax.adam(1e-3)
    loss_fn = loss_fn or _cross_entropy
    full = [{g.name: int(lv.get(g.name, g.size)) for g in graph.free} for lv in levels]
    for i, lv in enumerate(levels):
        try:
            graph.check_widths(lv)
        except ValueError as e:
            raise ValueError(f"level {i}: {e}") from None
    w = np.asarray(weights if weights is not None else level_weights(net, levels), np.float32)
    if w.shape != (len(levels),):
        raise ValueError(f"weights has shape {w.shape}, expected ({len(levels)},)")
    is_teacher = jnp.arange(len(levels)) == len(levels) - 1

    def forward(params, rest, stats, level_widths, x):
        v = {**rest, "params": params}
        if stats is not None:
            v["batch_stats"] = stats
        logits, new = net.apply(slice_widths(graph, v, level_widths), x, train=True,
                                mutable=True)
        if stats is not None:
            # The level updated only its prefix of each statistic; write it back in place.
            new = jax.tree.map(lambda old, upd: jax.lax.dynamic_update_slice(
                old, upd.astype(old.dtype), (0,) * old.ndim), stats, new)
        return logits, new

    def total_loss(params, rest, stats, x, y):
        logits, new_stats, per = [], [], []
        for i, lv in enumerate(full):
            s_i = None if stats is None else jax.tree.map(lambda a, i=i: a[i], stats)
            out, new = forward(params, rest, s_i, lv, x)
            logits.append(out)
            new_stats.append(new)
            per.append(loss_fn(out, y))
        per = jnp.stack(per)
        if distill > 0.0:
            teacher = jax.lax.stop_gradient(logits[-1])
            kl = jnp.stack([_kl(out, teacher) for out in logits])
            per = jnp.where(is_teacher, per, (1.0 - distill) * per + distill * kl)
        stacked = None if stats is None else jax.tree.map(lambda *a: jnp.stack(a), *new_stats)
        return jnp.sum(w * per), (per, stacked)

    def init(variables: Mapping) -> JointState:
        variables = jax.tree.map(jnp.asarray, dict(variables))
        graph.validate(variables)
        stats = variables.get("batch_stats")
        stacked = (None if not stats else
                   jax.tree.map(lambda a: jnp.stack([a] * len(levels)), stats))
        return JointState(variables, stacked, tx.init(variables["params"]),
                          jnp.zeros((), jnp.int32))

    @jax.jit
    def step(state: JointState, x, y):
        params = state.variables["params"]
        rest = {k: v for k, v in state.variables.items() if k not in ("params", "batch_stats")}
        (_, (per, new_stats)), grads = jax.value_and_grad(total_loss, has_aux=True)(
            params, rest, state.level_batch_stats, x, y)
        updates, opt_state = tx.update(grads, state.opt_state, params)
        variables = {**state.variables, "params": optax.apply_updates(params, updates)}
        stats = state.level_batch_stats
        if stats is not None:
            stats = new_stats
            variables["batch_stats"] = jax.tree.map(lambda a: a[-1], new_stats)
        return JointState(variables, stats, opt_state, state.step + 1), per

    return JointTrainer(init, step, w)


def finetune(net: Any, variables: Mapping, levels: Sequence[Mapping[str, int]],
             x: np.ndarray | Source, y: np.ndarray | None = None, *, epochs: int,
             batch_size: int = 128, key: jax.Array | None = None,
             tx: optax.GradientTransformation | None = None,
             distill: float = 0.0, weights: Sequence[float] | None = None,
             loss_fn: Callable | None = None, progress: bool = True,
             desc: str = "finetune", family: Family | None = None,
             mesh: Any = None, checkpoint_dir: str | os.PathLike | None = None,
             checkpoint_meta: Mapping | None = None, restart: bool = False) -> Family:
    """Fine-tune every level jointly and return the :class:`Family` (per-level statistics).

    Args:
        net: a zoo net.
        variables: the importance-PERMUTED full variables.
        levels: nested widths, smallest first, the largest (normally full) last.
        x, y: training data: numpy arrays, or (``y`` None) a pipeline of ``(x, y)`` /
            ``{"image", "label"}`` batches or a callable ``epoch -> iterable``
            (:func:`subnets.data.as_source`), whose own batches are then used.
        epochs: passes over the data; 0 returns the family of ``variables`` untouched.
        batch_size: examples per step of array data (the last short batch is dropped).
        key: shuffling key (required for arrays; unused by a pipeline).
        tx: optimiser (default :func:`default_optimizer` over the run's steps; a pipeline
            of unknown length needs ``tx`` or ``as_source(data, steps_per_epoch=N)``).
        distill, weights, loss_fn: see :func:`make_joint_step`.
        progress: show a tqdm bar (only on a terminal).
        desc: the bar's label.
        family: an existing family of these levels whose compiled executables the result
            should reuse (see :meth:`Family.replace`).
        mesh: shard every batch over this device mesh (:func:`subnets.parallel.data_mesh`),
            the state replicated; None: one device.
        checkpoint_dir: save the joint state (shared variables, per-level statistics,
            optimiser state) after every epoch (atomically, :func:`subnets.checkpoint.save_state`)
            and resume after the last saved epoch: a resumed run ends bit-identical to an
            uninterrupted one.
        checkpoint_meta: JSON-ready settings that identify the run beyond the levels, epochs,
            batch size, distillation, level weights, example count and a fingerprint of
            ``variables`` recorded anyway (e.g. the optimiser's learning rate, the data); a
            checkpoint of other settings is refused.
        restart: ignore a checkpoint of other settings (and overwrite it) instead of refusing.

    Returns:
        A :class:`~subnets.runtime.family.Family` over the fine-tuned variables.

    Raises:
        CheckpointError: ``checkpoint_dir`` holds fine-tuning of other settings (the keys
            named) and ``restart`` is False.

    References:
        Corti et al., REDS (arXiv:2311.13349), Sec. 3.4.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if epochs == 0:
        return family if family is not None else Family(net, variables, levels)
    src = training_source(net, x, y, batch_size=batch_size, who="finetune")
    src.check_epochs(epochs)
    per_epoch = src.array_steps() if src.is_arrays else src.steps_per_epoch
    if tx is None and per_epoch is None:
        raise src.unknown_steps("pass tx= (an optax optimiser)")
    steps = None if per_epoch is None else epochs * per_epoch
    trainer = make_joint_step(net, levels, tx=tx or default_optimizer(steps), weights=weights,
                              distill=distill, loss_fn=loss_fn)
    from subnets import parallel

    state = parallel.replicate(mesh, trainer.init(variables))
    identity = None
    if checkpoint_dir is not None:
        from subnets.runs import fingerprint

        identity = _identity(levels, epochs, batch_size, distill, weights, src.num_examples,
                             {"variables": fingerprint(*jax.tree.leaves(dict(variables))),
                              **dict(checkpoint_meta or {})})
    state, start = _resume(checkpoint_dir, state, epochs, identity, restart, mesh)
    bar = _progress(steps, desc, progress)
    record = _log.EpochLog(desc, epochs=epochs, quiet=not progress)
    if key is None and src.is_arrays:
        raise ValueError("finetune: key= is required to shuffle array inputs")
    keys = [None] * epochs if key is None else jax.random.split(key, epochs)
    done = start * per_epoch if per_epoch is not None else 0
    for epoch, epoch_key in enumerate(keys, 1):
        if epoch <= start:
            continue
        total, n = 0.0, 0
        for xb, yb in src.epoch(epoch - 1, epoch_key):
            state, per = trainer.step(state, *parallel.shard_batch(mesh, xb, yb))
            total, n, done = total + per, n + 1, done + 1
            check_finite(per, step=done, epoch=epoch)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=" ".join(f"{float(v):.2f}" for v in per), refresh=False)
        levels_loss = [round(float(v), 4) for v in np.asarray(total) / max(1, n)]
        record.epoch(epoch, loss=float(np.mean(levels_loss)), loss_levels=levels_loss)
        if checkpoint_dir is not None:
            checkpoint.save_state(checkpoint_dir, state, epoch=epoch, epochs=epochs,
                                  meta={"run": identity})
    if bar is not None:
        bar.close()
    record.close()
    if mesh is not None:
        state = parallel.to_host(state)
    if family is not None and family.levels == Family(net, variables, levels).levels:
        return family.replace(state.variables, level_batch_stats=state.level_batch_stats)
    return Family(net, state.variables, levels, level_batch_stats=state.level_batch_stats)


def _identity(levels, epochs, batch_size, distill, weights, examples, extra) -> dict:
    """What a fine-tuning checkpoint must match, JSON-normalised (tuples become lists)."""
    ident = {"levels": [{k: int(v) for k, v in dict(lv).items()} for lv in levels],
             "epochs": int(epochs), "batch_size": int(batch_size), "distill": float(distill),
             "weights": None if weights is None else [float(w) for w in weights],
             "examples": None if examples is None else int(examples), **dict(extra or {})}
    return json.loads(json.dumps(ident))


def _resume(directory, state: JointState, epochs: int, identity: dict, restart: bool,
            mesh: Any) -> tuple[JointState, int]:
    """``(state, epochs done)`` from the checkpoint in ``directory`` if it is of this run."""
    meta = None if directory is None else checkpoint.read_meta(directory)
    if meta is None:
        return state, 0
    old = meta.get("run") or {}
    diff = [f"{k} ({old.get(k, '<unset>')!r} there, {v!r} now)" for k, v in identity.items()
            if old.get(k, "<unset>") != v]
    if diff:
        if restart:
            return state, 0
        raise checkpoint.CheckpointError(f"{directory}: fine-tuning of other settings: "
                                         f"{'; '.join(diff)}")
    from subnets import parallel

    restored, start = checkpoint.restore_state(directory, state, epochs=epochs)
    return parallel.replicate(mesh, restored), start


def _progress(total: int | None, desc: str, enabled: bool):
    if not enabled or not _log.stderr_is_terminal():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
