"""Compiled code that is not JAX, installed as ``subnets.kernels``.

* :mod:`subnets.kernels.knapsack`: the Numba width knapsacks behind REDS (chains, and graphs of
  channel groups of small treewidth);
* ``mcu/``: the C99 int8 runtime of the nested MCU artifact (package data, found with
  ``importlib.resources.files("subnets.kernels") / "mcu"``).

Example: two layers of up to 3 units; keeping ``w`` units of a layer is worth ``U[layer, w]``
and the pair costs ``w0 * w1`` multiply-adds, so a budget of 4 keeps 2 units in each.
    >>> import numpy as np
    >>> from subnets.kernels import solve_chain
    >>> U = np.array([[0, 5, 8, 9], [0, 4, 7, 9]], float)
    >>> CP = np.zeros((1, 1, 4, 4)); CP[0, 0] = np.outer(np.arange(4), np.arange(4))
    >>> CU = np.zeros((1, 2, 4))
    >>> widths, value, used = solve_chain(U, None, CU, CP, 0.0, 4.0, [1, 1], [3, 3])
    >>> widths, value
    (array([2, 2]), 15.0)

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.3 (the knapsack formulation).
"""

from .knapsack import (
    FEAS_RTOL,
    brute_force_chain,
    evaluate_chain,
    greedy_chain,
    solve_chain,
)

__all__ = ["FEAS_RTOL", "brute_force_chain", "evaluate_chain", "greedy_chain", "solve_chain"]
