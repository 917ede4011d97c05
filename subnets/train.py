"""Plain supervised training and evaluation for any zoo net, through optax.

The step is a pure function of a :class:`TrainState`; only ``params`` are optimised, BatchNorm
statistics ride along in ``variables["batch_stats"]``. ``fit`` is the loop with a progress bar.

Example:
    >>> import jax, numpy as np, optax, subnets
    >>> from subnets import train
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> v = train.fit(net, net.init(jax.random.key(0)), x, y, epochs=3, batch_size=16,
    ...               key=jax.random.key(1), progress=False)
    >>> 0.0 <= train.evaluate(net, v, x, y) <= 1.0
    True

References:
    The optax "getting started" training loop; flax's functional API examples.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from subnets import _checks, checkpoint
from subnets import log as _log
from subnets._finite import check_finite
from subnets.data.source import Source, training_source


class TrainState(NamedTuple):
    """Variables (params + batch statistics), optimiser state, step counter."""

    variables: dict
    opt_state: Any
    step: jax.Array


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def init_state(variables: Mapping, tx: optax.GradientTransformation) -> TrainState:
    variables = dict(variables)
    return TrainState(variables, tx.init(variables["params"]), jnp.zeros((), jnp.int32))


def make_train_step(net: Any, tx: optax.GradientTransformation, *,
                    loss_fn: Callable = cross_entropy,
                    transform: Callable[[dict], dict] | None = None) -> Callable:
    """A jitted ``step(state, x, y) -> (state, loss)``.

    Args:
        net: a zoo net (``apply(variables, x, train=True, mutable=True)``).
        tx: any optax transformation over ``params``.
        loss_fn: ``loss_fn(logits, labels) -> scalar``.
        transform: optional pure map applied to the variables before the forward pass (a
            width mask, a sparsity mask, fake quantisation); gradients flow through it.
    """

    def loss_of(params, variables, x, y):
        v = {**variables, "params": params}
        if transform is not None:
            v = transform(v)
        logits, stats = net.apply(v, x, train=True, mutable=True)
        return loss_fn(logits, y), stats

    @jax.jit
    def step(state: TrainState, x, y):
        (loss, stats), grads = jax.value_and_grad(loss_of, has_aux=True)(
            state.variables["params"], state.variables, x, y)
        updates, opt_state = tx.update(grads, state.opt_state, state.variables["params"])
        params = optax.apply_updates(state.variables["params"], updates)
        variables = {**state.variables, "params": params}
        if "batch_stats" in variables:
            variables["batch_stats"] = stats
        return TrainState(variables, opt_state, state.step + 1), loss

    return step


def default_optimizer(steps: int, lr: float = 1e-3) -> optax.GradientTransformation:
    """Adam with a cosine decay over ``steps``: a sensible default for the zoo."""
    return optax.adam(optax.cosine_decay_schedule(lr, max(1, steps)))


def fit(net: Any, variables: Mapping, x: np.ndarray | Source, y: np.ndarray | None = None, *,
        epochs: int, batch_size: int = 128, tx: optax.GradientTransformation | None = None,
        key: jax.Array | None = None, progress: bool = True, transform: Callable | None = None,
        desc: str = "train", on_step: Callable[[int, TrainState], Any] | None = None,
        train_step: Callable | None = None,
        checkpoint_dir: str | os.PathLike | None = None, mesh: Any = None) -> dict:
    """Train for ``epochs`` over ``(x, y)`` and return the new variables.

    The data are arrays ``x, y`` or, with ``y`` None, a pipeline of batches (an iterable of
    ``(x, y)`` or ``{"image", "label"}`` batches, or a callable ``epoch -> iterable``; see
    :func:`subnets.data.as_source`): its batches are used as they come, ``batch_size`` and
    ``key`` are then unused, and the default optimiser needs the steps per epoch
    (``len(data)`` or ``as_source(data, steps_per_epoch=N)``) unless ``tx`` is given.

    Every epoch's mean loss, accuracy (eval mode, on up to 512 training examples) and time
    go to :class:`subnets.log.EpochLog` (stderr lines off a terminal, ``metrics.jsonl`` in the
    run directory); a run that ends at chance or whose loss did not fall warns.

    Args:
        key: shuffles array inputs (required for them; unused by a pipeline).
        on_step: optional ``on_step(n, state)`` called after every optimiser step, ``n`` the
            1-based count of steps taken (to save a rewind point, log, or stop watching).
        train_step: a step made by :func:`make_train_step` with this ``tx`` (and
            ``transform``), reused so that repeated calls compile once; by default a new one.
        checkpoint_dir: save the training state after every epoch (atomically, see
            :mod:`subnets.checkpoint`) and resume after the last saved epoch; a resumed run
            ends bit-identical to an uninterrupted one.
        mesh: shard every batch over this device mesh (:func:`subnets.parallel.data_mesh`;
            the batch size must divide over it), the state replicated; None: one device.
    """
    from subnets import parallel

    if y is not None:
        batch_size = max(1, min(batch_size, len(x)))  # a tiny subset trains, one batch an epoch
    src = training_source(net, x, y, batch_size=batch_size, who="fit")
    if src.is_arrays:
        if src.num_examples == 0:
            raise ValueError("fit: no training examples")
        _checks.labels(src.arrays[1], getattr(net, "num_classes", np.iinfo(np.int64).max))
    src.check_epochs(epochs)
    steps_per_epoch = src.array_steps() if src.is_arrays else src.steps_per_epoch
    if tx is None and steps_per_epoch is None:
        raise src.unknown_steps("pass tx= (an optax optimiser)")
    tx = tx or default_optimizer(epochs * steps_per_epoch)
    state = parallel.replicate(mesh, init_state(variables, tx))
    step = train_step or make_train_step(net, tx, transform=transform)
    bar = _progress(None if steps_per_epoch is None else epochs * steps_per_epoch, desc,
                    progress)
    record = _log.EpochLog(desc, epochs=epochs, num_classes=getattr(net, "num_classes", None),
                           quiet=not progress)
    start = 0
    if checkpoint_dir is not None and checkpoint.exists(checkpoint_dir):
        state, start = checkpoint.restore_state(checkpoint_dir, state, epochs=epochs)
    done = (start * steps_per_epoch if steps_per_epoch is not None
            else int(parallel.to_host(state.step)))
    for epoch, epoch_key in enumerate(_epoch_keys(key, epochs, src.is_arrays), 1):
        if epoch <= start:
            continue
        total, n = 0.0, 0
        for xb, yb in src.epoch(epoch - 1, epoch_key):
            state, loss = step(state, *parallel.shard_batch(mesh, xb, yb))
            total, done, n = total + loss, done + 1, n + 1
            check_finite(loss, step=done, epoch=epoch)
            if on_step is not None:
                on_step(done, state)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
        v = state.variables if transform is None else transform(state.variables)
        record.epoch(epoch, loss=float(total) / n, accuracy=evaluate(net, v, *src.sample()))
        if checkpoint_dir is not None:
            checkpoint.save_state(checkpoint_dir, state, epoch=epoch, epochs=epochs)
    if bar is not None:
        bar.close()
    record.close()
    return state.variables if mesh is None else parallel.to_host(state.variables)


def _epoch_keys(key: jax.Array | None, epochs: int, required: bool) -> list:
    """One shuffling key per epoch (None for a pipeline that orders itself)."""
    if key is None:
        if required:
            raise ValueError("fit: key= is required to shuffle array inputs")
        return [None] * epochs
    return list(jax.random.split(key, epochs))


def predict(net: Any, variables: Mapping, x: np.ndarray, *, batch_size: int = 500) -> np.ndarray:
    """Logits for all of ``x`` in eval mode, batched (last batch padded to one shape)."""
    apply = _eval_apply(net)
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        n = len(xb)
        if n < batch_size and len(x) > batch_size:
            xb = np.concatenate([xb, np.repeat(xb[-1:], batch_size - n, axis=0)])
        out.append(np.asarray(apply(variables, xb))[:n])
    return np.concatenate(out) if out else np.zeros((0, net.graph["out"].size), np.float32)


def evaluate(net: Any, variables: Mapping, x: np.ndarray, y: np.ndarray, *,
             batch_size: int = 500) -> float:
    """Top-1 accuracy in eval mode, over arrays (evaluation data are arrays, not pipelines:
    collect a test pipeline with ``np.concatenate`` first)."""
    logits = predict(net, variables, x, batch_size=batch_size)
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(y)))


@functools.lru_cache(maxsize=32)
def _eval_apply(net: Any) -> Callable:
    """One compiled eval forward per net (nets are frozen dataclasses, hashable)."""
    return jax.jit(lambda v, xb: net.apply(v, xb))


def _progress(total: int | None, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # No bar when stderr is not a terminal (CI logs, pipes): EpochLog prints lines instead.
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True,
                disable=not _log.stderr_is_terminal())
