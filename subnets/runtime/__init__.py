"""Run-time containers that switch a deployed model between subnetworks.

Example:
    >>> import numpy as np
    >>> from subnets.runtime import Portfolio
    >>> p = Portfolio()
    >>> p.add("v0", {"w": np.zeros(4, np.float32)})
    >>> sorted(p.switch("v0"))
    ['w']

References:
    DNNShifter (Eccles et al., 2023): the portfolio of compressed variants; REDS (Corti et al.,
    arXiv:2311.13349): the nested family with prefix weights.
"""

from subnets.runtime.family import Family
from subnets.runtime.portfolio import Portfolio

__all__ = ["Family", "Portfolio"]
