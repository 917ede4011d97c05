"""Training a compressible subspace: n levels per step, vmapped, one compilation for the run.

Each step draws n values of alpha inside the jitted function (the sandwich rule {0, 1, U, U} for
structured sparsity, one uniform draw otherwise, a fixed set for the Discrete baseline), maps
them to compression levels with the reference's warm-up behaviour, evaluates the n compressed
networks with ``jax.vmap`` and takes one optimiser step on the summed loss (+ beta cos^2 for a
line). Levels are traced values, so the step compiles once however many levels a run visits. The
same step runs data parallel: the batch is sharded over a 1-D ``Mesh`` of all devices.

Example:
    >>> import jax, numpy as np, subnets
    >>> from subnets import subspace
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> s = subspace.init_point(net, key=jax.random.key(0))
    >>> x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> s = subspace.fit(net, s, x, y, epochs=2, batch_size=32, key=jax.random.key(1),
    ...                  lr=0.05, progress=False)
    >>> s.compression
    'structured'

References:
    Nunez et al., LCS (arXiv:2110.04252), Algorithm 1; Yu & Huang, Universally Slimmable
    Networks (ICCV 2019) for the sandwich rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from subnets.subspace.compress import (
    ACT_RANGES,
    act_quant_apply,
    channel_counts,
    make,
    masked_apply,
)
from subnets.subspace.core import Subspace, regulariser, weights
from subnets.train import cross_entropy
from subnets.transforms import width_mask


@dataclasses.dataclass(frozen=True)
class LCSConfig:
    """How levels are drawn each step.

    Attributes:
        samples: levels per step (n); the sandwich rule needs n >= 2.
        sampling: ``"sandwich"`` (alpha = 0, 1, then uniform), ``"uniform"`` (quantised
            subspaces draw alpha from {1/m, ..., m/m} for m bit widths), or ``"discrete"``
            (the fixed ``alphas`` every step: the Discrete baseline).
        alphas: the fixed alphas of ``"discrete"`` sampling.
        beta: weight of the cos^2 endpoint regulariser (lines only).
        warmup: fraction of the run's steps in warm-up. Unstructured point: dense during
            warm-up; unstructured line: TopK decays linearly from 1 to its target over it;
            quantised: activations are quantised only after it.
        act_quant: quantise activations after warm-up (quantised subspaces).
        range_momentum: running activation ranges (``variables["act_ranges"]``, kept when
            the subspace has them, see :func:`init_act_ranges`) move as
            ``m * old + (1 - m) * batch range`` every step, warm-up included.
        mask: structured levels mask ``"activations"`` (default: shared weights, the fast
            path under vmap, see :func:`masked_apply`) or ``"weights"`` (``width_mask``).
        levels: how the n levels of a step are evaluated inside the one jitted step:
            ``"vmap"`` (default: side by side, one computation over n x batch examples) or
            ``"unroll"`` (n copies of the level in the program, each over the batch alone).
            Same loss, gradients and single compilation; on a CPU, where XLA's per-example
            throughput falls as the batch grows (cPreResNet20: 177 examples/s at batch 64,
            132 at 256), ``"unroll"`` can be the faster (``benchmarks/lcs_throughput.py``).
            ``jax.lax.map`` is not offered: its backward pass through convolutions ran 8x
            slower than either on the CPU.
        step: structured levels run ``"masked"`` (the options above: static shapes, one
            compilation) or ``"sliced"`` (each level at its real width,
            :mod:`subnets.subspace.sliced`); ``"auto"`` (default) picks the faster on this
            backend (:func:`subnets.subspace.sliced.choose_step`).
        grid: alphas a sliced step may run at (``j / (grid - 1)``; the sandwich's uniform
            draws are rounded to them): one compilation per grid point used.
    """

    samples: int = 4
    sampling: str = "sandwich"
    alphas: tuple[float, ...] = ()
    beta: float = 1.0
    warmup: float = 0.8
    act_quant: bool = True
    range_momentum: float = 0.9
    mask: str = "activations"
    levels: str = "vmap"
    step: str = "auto"
    grid: int = 13

    def __post_init__(self):
        if self.mask not in ("activations", "weights"):
            raise ValueError(f"mask must be 'activations' or 'weights', got {self.mask!r}")
        if self.step not in ("auto", "masked", "sliced"):
            raise ValueError(f"step must be 'auto', 'masked' or 'sliced', got {self.step!r}")
        if self.grid < 2:
            raise ValueError(f"grid must be >= 2, got {self.grid}")
        if self.levels not in ("vmap", "unroll"):
            raise ValueError(f"levels must be 'vmap' or 'unroll', got {self.levels!r}")
        if self.sampling not in ("sandwich", "uniform", "discrete"):
            raise ValueError(f"sampling must be sandwich, uniform or discrete, got "
                             f"{self.sampling!r}")
        if self.sampling == "sandwich" and self.samples < 2:
            raise ValueError(f"the sandwich rule needs samples >= 2, got {self.samples}")
        if self.sampling == "discrete" and not self.alphas:
            raise ValueError("discrete sampling needs alphas=(...)")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if not 0.0 <= self.range_momentum < 1.0:
            raise ValueError(f"range_momentum must be in [0, 1), got {self.range_momentum}")
        if not 0.0 <= self.warmup <= 1.0:
            raise ValueError(f"warmup is a fraction of steps in [0, 1], got {self.warmup}")

    @property
    def n(self) -> int:
        return len(self.alphas) if self.sampling == "discrete" else self.samples


def default_config(compression: str) -> LCSConfig:
    """The reference's sampling: sandwich n = 4 when structured, one uniform level otherwise."""
    if compression == "structured":
        return LCSConfig(4, "sandwich")
    return LCSConfig(1, "uniform")


class SubspaceState(NamedTuple):
    """The subspace being trained, its optimiser state and the step counter."""

    subspace: Subspace
    opt_state: Any
    step: jax.Array


def trainable(subspace: Subspace) -> dict:
    """What the optimiser updates: the base params and the line's second endpoint."""
    return {"base": subspace.base["params"], "end": subspace.end}


def _with(subspace: Subspace, tr: dict, base: dict | None = None) -> Subspace:
    base = {**(base or subspace.base), "params": tr["base"]}
    return dataclasses.replace(subspace, base=base, end=tr["end"])


def init_state(subspace: Subspace, tx: optax.GradientTransformation, *,
               mesh: Mesh | None = None) -> SubspaceState:
    """A fresh state (replicated over ``mesh`` when given)."""
    from subnets import parallel

    state = SubspaceState(subspace, tx.init(trainable(subspace)), jnp.zeros((), jnp.int32))
    return parallel.replicate(mesh, state)


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``"batch"`` over ``devices`` (default: all of ``jax.devices()``)."""
    from subnets import parallel

    return parallel.data_mesh(devices)


def sample_alphas(key: jax.Array, config: LCSConfig, subspace: Subspace) -> jax.Array:
    """The n alphas of one step (traceable)."""
    if config.sampling == "discrete":
        return jnp.asarray(config.alphas, jnp.float32)
    if subspace.compression == "quantized":
        m = int(subspace.high) - int(subspace.low) + 1
        a = jax.random.randint(key, (config.samples,), 1, m + 1).astype(jnp.float32) / m
    else:
        a = jax.random.uniform(key, (config.samples,))
    if config.sampling == "sandwich":
        a = a.at[0].set(0.0).at[1].set(1.0)
    return a


def make_loss(net: Any, config: LCSConfig, total_steps: int):
    """``loss(trainable, subspace, alphas, x, y, step) -> (total, aux)`` over the n alphas."""
    warm = float(config.warmup) * max(1, int(total_steps))

    def level_loss(tr, sub, alpha, x, y, step):
        comp = make(sub.compression, net.graph, sub.low, sub.high)
        s = _with(sub, tr)
        level = comp.gamma(alpha)
        after = step.astype(jnp.float32) >= warm
        if sub.compression == "unstructured":
            if sub.kind == "point":
                level = jnp.where(after, level, 1.0)
            else:
                decay = jnp.maximum(1.0 - step.astype(jnp.float32) / max(warm, 1.0), 0.0)
                level = level + (1.0 - level) * decay
        seen = {}  # quantised inputs' batch ranges, for the running activation ranges
        if sub.compression == "structured" and config.mask == "activations":
            logits, stats = masked_apply(net, weights(s, alpha), x,
                                         channel_counts(net.graph, level), train=True,
                                         mutable=True)
        elif sub.compression == "quantized" and config.act_quant:
            v = comp.compress(weights(s, alpha), level)
            (logits, stats), seen = act_quant_apply(net, v, x, level, enabled=after,
                                                    train=True, mutable=True, observe=True)
        else:
            logits, stats = net.apply(comp.compress(weights(s, alpha), level), x, train=True,
                                      mutable=True)
        active = {}
        if "batch_stats" in sub.base and sub.compression == "structured":
            ones = jax.tree.map(jnp.ones_like, s.base)
            active = width_mask(net.graph, ones, channel_counts(net.graph, level))["batch_stats"]
        return cross_entropy(logits, y), (stats, active, seen)

    def loss(tr, sub, alphas, x, y, step):
        if config.levels == "unroll":
            outs = [level_loss(tr, sub, a, x, y, step) for a in alphas]
            losses, (stats, active, seen) = jax.tree.map(lambda *a: jnp.stack(a), *outs)
        else:
            losses, (stats, active, seen) = jax.vmap(
                level_loss, in_axes=(None, None, 0, None, None, None))(tr, sub, alphas, x, y,
                                                                      step)
        reg = jnp.zeros((), jnp.float32)
        if sub.kind == "line" and config.beta > 0:
            reg = config.beta * regulariser(_with(sub, tr))
        return losses.sum() + reg, {"losses": losses, "reg": reg, "stats": stats,
                                    "active": active, "seen": seen}

    return loss


def merge_batch_stats(old: dict, stats: dict, active: dict) -> dict:
    """Combine per-level running statistics: each channel averages the levels it was live in.

    The reference's shared BatchNorm updates ``running_mean[:c]`` once per level in sequence;
    vmapped levels produce their updates side by side, so each channel takes the mean of the
    updates from the levels where it was active (one EMA step with the mean batch statistic),
    and keeps its old value if no level used it.
    """
    if not active:
        return jax.tree.map(lambda s: s.mean(0), stats)

    def merge(o, s, m):
        count = m.sum(0)
        return jnp.where(count > 0, (s * m).sum(0) / jnp.maximum(count, 1.0), o)

    return jax.tree.map(merge, old, stats, active)


class TrainStep:
    """The jitted ``step(state, x, y, key) -> (state, metrics)``; ``traces`` counts tracings."""

    kind = "masked"

    def __init__(self, net: Any, tx: optax.GradientTransformation, config: LCSConfig,
                 total_steps: int, mesh: Mesh | None):
        self.traces = 0
        self.mesh = mesh
        loss = make_loss(net, config, total_steps)

        def step(state: SubspaceState, x, y, key):
            self.traces += 1
            sub = state.subspace
            alphas = sample_alphas(jax.random.fold_in(key, state.step), config, sub)
            tr = trainable(sub)
            (total, aux), grads = jax.value_and_grad(loss, has_aux=True)(
                tr, sub, alphas, x, y, state.step)
            updates, opt_state = tx.update(grads, state.opt_state, tr)
            tr = optax.apply_updates(tr, updates)
            base = sub.base
            if "batch_stats" in base:
                base = {**base, "batch_stats": merge_batch_stats(
                    base["batch_stats"], aux["stats"], aux["active"])}
            if ACT_RANGES in base and aux["seen"]:
                m = config.range_momentum
                base = {**base, ACT_RANGES: jax.tree.map(
                    lambda old, new: m * old + (1.0 - m) * new.mean(0), base[ACT_RANGES],
                    aux["seen"])}
            metrics = {"loss": total, "losses": aux["losses"], "reg": aux["reg"],
                       "alphas": alphas}
            return SubspaceState(_with(sub, tr, base), opt_state, state.step + 1), metrics

        self._step = jax.jit(step)

    def __call__(self, state: SubspaceState, x, y, key: jax.Array):
        if self.mesh is not None:
            from subnets import parallel

            x, y = parallel.shard_batch(self.mesh, x, y)
        return self._step(state, x, y, key)


def make_train_step(net: Any, tx: optax.GradientTransformation, config: LCSConfig | None = None,
                    *, total_steps: int, compression: str = "structured",
                    mesh: Mesh | None = None) -> TrainStep:
    """The LCS train step, jitted once for every level it will sample.

    Args:
        net: a zoo net (``norm="instance"``/``"group"`` for LCS; ``"batch"`` for baselines).
        tx: optax transformation over :func:`trainable`.
        config: sampling and warm-up (default: :func:`default_config` of ``compression``).
        total_steps: steps in the whole run (warm-up is a fraction of it).
        compression: only used to pick the default config.
        mesh: shard each batch over this mesh's ``"batch"`` axis (see :func:`data_mesh`);
            the state must come from ``init_state(..., mesh=mesh)``.

    Returns:
        the masked :class:`TrainStep`, or a :class:`~subnets.subspace.sliced.SlicedTrainStep`
        when ``config.step`` resolves to ``"sliced"``; either has ``kind``.
    """
    config = config or default_config(compression)
    from subnets.subspace import sliced

    if sliced.choose_step(net, config, compression) == "sliced":
        return sliced.SlicedTrainStep(net, tx, config, total_steps, mesh)
    return TrainStep(net, tx, config, total_steps, mesh)


def default_optimizer(total_steps: int, *, lr: float = 0.1, momentum: float = 0.9,
                      weight_decay: float = 5e-4, warmup_steps: int = 0
                      ) -> optax.GradientTransformation:
    """The reference's SGD: momentum 0.9, weight decay 5e-4, linear warm-up then cosine."""
    total_steps = max(1, int(total_steps))
    warmup_steps = min(int(warmup_steps), total_steps - 1)
    if warmup_steps > 0:
        sched = optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, total_steps)
    else:
        sched = optax.cosine_decay_schedule(lr, total_steps)
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(sched, momentum))
