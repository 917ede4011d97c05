"""Finite checks: training stops at the first non-finite loss; nothing non-finite is saved.

Example:
    >>> from subnets._finite import check_finite
    >>> check_finite(0.5, step=3, epoch=1)
    >>> try:
    ...     check_finite(float("nan"), step=3, epoch=1)
    ... except ValueError as e:
    ...     print(str(e)[:40])
    non-finite loss nan at step 3 (epoch 1):

References:
    IEEE 754 (NaN propagates, so the first non-finite loss marks where training diverged).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class NonFiniteError(FloatingPointError, ValueError):
    """A loss or an array to be saved holds NaN or infinity."""


def check_finite(loss: Any, *, step: int, epoch: int | None = None, what: str = "loss") -> None:
    """Raise :class:`NonFiniteError` naming ``step`` and ``epoch`` if ``loss`` is not finite.

    ``loss`` is a scalar or a small vector (per-level losses) of Python, NumPy or JAX numbers
    (a JAX value is fetched, which waits for its step). ``step`` and ``epoch`` are 1-based.
    """
    value = np.asarray(loss)
    if not np.isfinite(value).all():
        where = f"step {step}" + (f" (epoch {epoch})" if epoch is not None else "")
        raise NonFiniteError(f"non-finite {what} {value} at {where}: training stopped before "
                             "saving; lower the learning rate or check the data for NaN/inf")


def check_array(a: Any, where: str) -> None:
    """Raise :class:`NonFiniteError` if a float array ``a`` holds NaN/inf (``where`` names it)."""
    arr = np.asarray(a)
    if arr.dtype.kind in "fc" or arr.dtype.name == "bfloat16":
        finite = np.isfinite(arr.astype(np.float32) if arr.dtype.name == "bfloat16" else arr)
        if not finite.all():
            bad = int(arr.size - np.count_nonzero(finite))
            raise NonFiniteError(f"{where}: {bad} of {arr.size} values are NaN or infinite; "
                                 "refusing to save them")
