"""The sliced structured LCS step: each sampled level runs at its real width.

The masked step (:class:`~subnets.subspace.train.TrainStep`) keeps shapes static by zeroing the
channels a level drops, so every level costs a full-width forward and backward. Here each
level's variables are physically cut to the first ``k`` channels of every free group with
:func:`subnets.transforms.slice_widths` *inside* the jitted function, so XLA runs convolutions
of the level's own size and the gradient flows back into the full arrays through the slice
(zero on the channels the level does not use, exactly as masking gives).

Shapes must be static, so levels come from a fixed grid: the sandwich's uniform draws are
rounded to one of ``grid`` evenly spaced alphas (``grid=13`` over widths [0.25, 1] gives widths
in steps of 1/16), the Discrete baseline's fixed alphas are used as given. One program per grid
point is compiled on first use and cached (``traces`` counts them), each computing one level's
loss and adding its gradient to an accumulator; two more programs zero the accumulator and
apply the optimiser. The step therefore costs the MACs of the widths it samples, and
compilations stay bounded whatever the run's length: ``grid + 2`` programs, each traced once
(an alpha is looked up by its grid point, so the float32 alphas a step reports, passed back to
:meth:`SlicedTrainStep.flops`, find the same program).

Only structured compression slices; a subspace of another kind is handed to the masked step.

Example:
    >>> import jax, numpy as np, subnets
    >>> from subnets import subspace
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> s = subspace.init_point(net, key=jax.random.key(0))
    >>> tx = subspace.default_optimizer(10, lr=0.05)
    >>> step = SlicedTrainStep(net, tx, subspace.LCSConfig(4, "sandwich", step="sliced"),
    ...                        total_steps=10)
    >>> x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    >>> state, m = step(subspace.init_state(s, tx), x, (x[:, 0] > 0).astype("int32"),
    ...                 jax.random.key(1))
    >>> m["losses"].shape, step.traces <= 13 + 2
    ((4,), True)

References:
    Nunez et al., LCS (arXiv:2110.04252), Algorithm 1 (the reference slices weights);
    Yu & Huang, Universally Slimmable Networks (ICCV 2019).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from subnets import parallel
from subnets.subspace.compress import channel_counts
from subnets.subspace.core import Subspace, regulariser, weights
from subnets.subspace.train import (
    LCSConfig,
    SubspaceState,
    TrainStep,
    _with,
    merge_batch_stats,
    sample_alphas,
    trainable,
)
from subnets.train import cross_entropy
from subnets.transforms import slice_widths

STEPS = ("auto", "masked", "sliced")


def grid_alphas(grid: int) -> np.ndarray:
    """The ``grid`` alphas a sliced step may run at: ``j / (grid - 1)``, j = 0..grid-1."""
    if grid < 2:
        raise ValueError(f"grid must be >= 2 (both ends of the range), got {grid}")
    return np.arange(grid, dtype=np.float64) / (grid - 1)


def snap(alphas: Any, config: LCSConfig) -> np.ndarray:
    """Host-side alphas of a sliced step: drawn ones rounded to the grid, fixed ones as given."""
    a = np.asarray(alphas, np.float64)
    if config.sampling == "discrete":
        return a
    g = config.grid - 1
    return np.round(np.clip(a, 0.0, 1.0) * g) / g


def level_loss(net: Any, tr: dict, sub: Subspace, alpha: Any, width: float, x, y):
    """One level's loss at ``width`` with physically sliced arrays; ``(loss, (stats, active))``.

    ``stats``/``active`` are full-size (the level's prefix of each running statistic written
    over the old one, and the prefix mask) so they merge as the masked step's do.
    """
    graph = net.graph
    counts = channel_counts(graph, float(width))
    v = weights(_with(sub, tr), alpha)
    logits, stats = net.apply(slice_widths(graph, v, counts), x, train=True, mutable=True)
    active = {}
    if "batch_stats" in sub.base:
        old = sub.base["batch_stats"]
        active = jax.tree.map(lambda o, u: (jnp.arange(o.shape[0]) < u.shape[0]).astype(
            o.dtype), old, stats)
        stats = jax.tree.map(lambda o, u: jax.lax.dynamic_update_slice(
            o, u.astype(o.dtype), (0,) * o.ndim), old, stats)
    return cross_entropy(logits, y), (stats, active)


class SlicedTrainStep:
    """``step(state, x, y, key) -> (state, metrics)`` with every level at its real width.

    Same state, metrics and call as :class:`~subnets.subspace.train.TrainStep` (the masked
    step); ``traces`` counts compiled programs, ``kind`` is ``"sliced"``.
    """

    kind = "sliced"

    def __init__(self, net: Any, tx: optax.GradientTransformation, config: LCSConfig,
                 total_steps: int, mesh=None):
        self.net, self.tx, self.config, self.mesh = net, tx, config, mesh
        self._traces = 0
        self._masked: TrainStep | None = None
        self._total = total_steps
        self._levels: dict[float, Callable] = {}
        self._sample = jax.jit(lambda key, step, sub: sample_alphas(
            jax.random.fold_in(key, step), config, sub))

        def update(state: SubspaceState, grads, losses, stats, active, alphas):
            self._traces += 1
            sub = state.subspace
            tr = trainable(sub)
            reg = jnp.zeros((), jnp.float32)
            if sub.kind == "line" and config.beta > 0:
                reg, g_reg = jax.value_and_grad(
                    lambda t: config.beta * regulariser(_with(sub, t)))(tr)
                grads = jax.tree.map(jnp.add, grads, g_reg)
            updates, opt_state = tx.update(grads, state.opt_state, tr)
            tr = optax.apply_updates(tr, updates)
            base = sub.base
            if "batch_stats" in base:
                base = {**base, "batch_stats": merge_batch_stats(base["batch_stats"], stats,
                                                                 active)}
            metrics = {"loss": losses.sum() + reg, "losses": losses, "reg": reg,
                       "alphas": alphas}
            return SubspaceState(_with(sub, tr, base), opt_state, state.step + 1), metrics

        self._update = jax.jit(update)

        def zeros(tr):
            self._traces += 1
            return jax.tree.map(jnp.zeros_like, tr)

        self._zeros = jax.jit(zeros)

    @property
    def traces(self) -> int:
        """Programs traced so far (the masked fallback's included)."""
        return self._traces + (self._masked.traces if self._masked is not None else 0)

    def _canonical(self, alpha: float) -> float:
        """The cache key of an alpha: its grid point (drawn alphas) or its float32 value
        (the Discrete baseline's fixed ones), so float32 and float64 spellings of one level
        share a program."""
        if self.config.sampling == "discrete":
            return float(np.float32(alpha))
        return float(snap(alpha, self.config))

    def _level(self, alpha: float, sub: Subspace) -> Callable:
        alpha = self._canonical(alpha)
        fn = self._levels.get(alpha)
        if fn is None:
            net = self.net
            width = float(np.float32(sub.low + (sub.high - sub.low) * np.float32(alpha)))

            def grad_acc(tr, sub, a, x, y, acc):
                self._traces += 1
                (loss, aux), g = jax.value_and_grad(
                    lambda t: level_loss(net, t, sub, a, width, x, y), has_aux=True)(tr)
                return loss, aux, jax.tree.map(jnp.add, acc, g)

            fn = self._levels[alpha] = jax.jit(grad_acc)
        return fn

    def _fallback(self) -> TrainStep:
        if self._masked is None:
            self._masked = TrainStep(self.net, self.tx, self.config, self._total, self.mesh)
        return self._masked

    def losses_and_grads(self, state: SubspaceState, alphas, x, y):
        """Per-level losses, per-level aux and the summed level gradient at ``alphas``."""
        sub = state.subspace
        tr = trainable(sub)
        acc, losses, auxes = self._zeros(tr), [], []
        for a in np.asarray(alphas, np.float64):
            loss, aux, acc = self._level(float(a), sub)(tr, sub, jnp.float32(a), x, y, acc)
            losses.append(loss)
            auxes.append(aux)
        return jnp.stack(losses), auxes, acc

    def precompile(self, state: SubspaceState, x, y) -> float:
        """Compile the program of every grid point now (not on first use); returns seconds."""
        import time

        t = time.perf_counter()
        sub = state.subspace
        if self.mesh is not None:
            x, y = parallel.shard_batch(self.mesh, x, y)
        tr = trainable(sub)
        acc = self._zeros(tr)
        alphas = (self.config.alphas if self.config.sampling == "discrete"
                  else grid_alphas(self.config.grid))
        for a in alphas:
            jax.block_until_ready(self._level(float(a), sub)(tr, sub, jnp.float32(a), x, y, acc))
        return time.perf_counter() - t

    def flops(self, state: SubspaceState, alphas, x, y) -> float:
        """Executed FLOPs (XLA's cost analysis) of one step's level programs at ``alphas``."""
        sub = state.subspace
        tr = trainable(sub)
        total, acc = 0.0, jax.tree.map(jnp.zeros_like, tr)
        for a in np.asarray(alphas, np.float64):
            fn = self._level(float(a), sub)
            args = (tr, sub, jnp.float32(a), x, y, acc)
            total += float(fn.lower(*args).compile().cost_analysis()["flops"])
        return total

    def __call__(self, state: SubspaceState, x, y, key: jax.Array):
        sub = state.subspace
        if sub.compression != "structured":
            return self._fallback()(state, x, y, key)
        if self.mesh is not None:
            x, y = parallel.shard_batch(self.mesh, x, y)
        alphas = snap(parallel.to_host(self._sample(key, state.step, sub)), self.config)
        losses, auxes, grads = self.losses_and_grads(state, alphas, x, y)
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *[a[0] for a in auxes])
        active = jax.tree.map(lambda *a: jnp.stack(a), *[a[1] for a in auxes])
        return self._update(state, grads, losses, stacked, active,
                            jnp.asarray(alphas, jnp.float32))


_CHOICES: dict = {}


def choose_step(net: Any, config: LCSConfig, compression: str, *, backend: str | None = None,
                probe: Callable[[], str] | None = None) -> str:
    """``"sliced"`` or ``"masked"``: what ``config.step`` resolves to here.

    ``"auto"`` takes the measured rule: on the CPU the sliced step was the faster in every
    run of ``benchmarks/train_speed.py`` (cPreResNet20, the sandwich's four levels: half the
    executed FLOPs; figures in ``docs/results.md``); elsewhere, where it has not been
    measured, ``probe()`` decides when given (a timed step of each), else the sliced step
    (fewer FLOPs). Non-structured
    compressions always use the masked step. The answer is cached per (net, compression,
    backend) and is what :func:`subnets.subspace.fit` records.
    """
    if config.step not in STEPS:
        raise ValueError(f"step must be one of {STEPS}, got {config.step!r}")
    if compression != "structured":
        return "masked"
    if config.step != "auto":
        return config.step
    backend = backend or jax.default_backend()
    key = (net, compression, backend)
    if key not in _CHOICES:
        _CHOICES[key] = "sliced" if backend == "cpu" or probe is None else probe()
    return _CHOICES[key]
