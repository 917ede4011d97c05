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
