"""The exact width knapsacks behind REDS, in Numba: chains and graphs of small treewidth.

* :mod:`.chain`: groups in a line (DNN, CNN, DS-CNN); :func:`solve_chain`.
* :mod:`.graph`: any graph of groups whose path decomposition is narrow (residual stages,
  branches that rejoin); :func:`solve_graph`, and :func:`lagrangian_graph` (explicit heuristic
  with an optimality gap) where it is too wide.

Example:
    >>> import numpy as np
    >>> from subnets.kernels.knapsack import solve_chain, solve_graph
    >>> U = np.array([[0, 5, 8, 9], [0, 4, 7, 9]], float)
    >>> CP = np.outer(np.arange(4), np.arange(4))[None, None]
    >>> CU = np.zeros((1, 2, 4))
    >>> solve_chain(U, None, CU, CP, 0.0, 4.0, [1, 1], [3, 3])[1]
    15.0
    >>> solve_graph(U, None, CU, CP, 0.0, 4.0, 1, 3, [[0, 1]])[1]
    15.0

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.3 (the knapsack formulation).
"""

from .chain import FEAS_RTOL, brute_force_chain, evaluate_chain, greedy_chain, solve_chain
from .graph import (
    MAX_STATES,
    TooWideError,
    brute_force_graph,
    decompose,
    evaluate_graph,
    lagrangian_graph,
    solve_graph,
)

__all__ = [
    "FEAS_RTOL",
    "MAX_STATES",
    "TooWideError",
    "brute_force_chain",
    "brute_force_graph",
    "decompose",
    "evaluate_chain",
    "evaluate_graph",
    "greedy_chain",
    "lagrangian_graph",
    "solve_chain",
    "solve_graph",
]
