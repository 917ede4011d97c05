"""Timing helpers shared by the benchmarks (medians of warm, jitted calls)."""

from __future__ import annotations

import time

import jax
import numpy as np

_JIT: dict = {}


def latency_ms(net, variables, batch: int, repeats: int) -> float:
    """Median wall time (ms) of a jitted eval forward pass, after a warm-up."""
    # One jitted function per net: same-shaped variables (dense vs masked) share a compilation.
    fn = _JIT.get(id(net))
    if fn is None:
        fn = _JIT[id(net)] = jax.jit(lambda v, x: net.apply(v, x))
    x = np.random.default_rng(0).random((batch,) + tuple(net.input_shape), np.float32)
    v = jax.device_put(variables)
    fn(v, x).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(v, x).block_until_ready()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def sgemm_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 numpy matmul rate (FLOP/s) over ``repeats`` calls: the machine's peak that
    the speed benchmarks divide by, measured in the same run as what they time."""
    a = np.random.default_rng(0).random((n, n), np.float32)
    b = np.random.default_rng(1).random((n, n), np.float32)
    a @ b
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best
