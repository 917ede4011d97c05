"""Compiled code that is not JAX: the Numba knapsack behind REDS (later also the MCU runtime)."""

from subnets.kernels.knapsack import (
    FEAS_RTOL,
    brute_force_chain,
    evaluate_chain,
    greedy_chain,
    solve_chain,
)

__all__ = ["FEAS_RTOL", "brute_force_chain", "evaluate_chain", "greedy_chain", "solve_chain"]
