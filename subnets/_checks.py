"""Strict checks of integer-like inputs: widths and permutations of any numeric type.

NumPy and JAX integers are accepted wherever a Python ``int`` is (and range-checked the same
way); booleans and non-integral numbers are refused. Traced values (under ``jit``/``vmap``)
cannot be inspected and pass through unchanged: check them before tracing.

Example:
    >>> import numpy as np
    >>> from subnets import _checks
    >>> _checks.width(np.int64(3), 8, "g0")
    3
    >>> try:
    ...     _checks.width(np.int64(-3), 8, "g0")
    ... except ValueError as e:
    ...     print(e)
    width -3 for group 'g0' outside [1, 8]
    >>> _checks.permutation([2, 0, 1], 3, "g0").tolist()
    [2, 0, 1]

References:
    Python's ``operator.index`` protocol (what counts as an integer).
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np


def is_traced(x: Any) -> bool:
    import jax

    return isinstance(x, jax.core.Tracer)


def integer(value: Any, what: str) -> int:
    """``value`` as an ``int`` if it is integer-like (Python/NumPy/JAX, 0-d), else TypeError."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{what} must be an integer, got the boolean {value!r}")
    if hasattr(value, "ndim") and getattr(value, "ndim", 0) == 0 and hasattr(value, "dtype"):
        if np.dtype(value.dtype).kind not in "iu":
            raise TypeError(f"{what} must be an integer, got {value!r} of dtype {value.dtype}")
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {value!r} "
                        f"({type(value).__name__})") from None


def width(value: Any, size: int, group: str) -> Any:
    """A concrete width as an ``int`` in ``[1, size]``; a traced one unchanged."""
    if is_traced(value):
        return value
    w = integer(value, f"width for group {group!r}")
    if not 1 <= w <= size:
        raise ValueError(f"width {w} for group {group!r} outside [1, {size}]")
    return w


def permutation(perm: Any, size: int, group: str) -> Any:
    """A concrete permutation of ``range(size)`` as an int array; a traced one unchanged."""
    if is_traced(perm):
        if tuple(perm.shape) != (size,):
            raise ValueError(f"perm for group {group!r} has shape {tuple(perm.shape)}, "
                             f"expected ({size},)")
        return perm
    p = np.asarray(perm)
    if p.shape != (size,):
        raise ValueError(f"perm for group {group!r} has shape {p.shape}, expected ({size},)")
    if p.dtype.kind not in "iu":
        raise TypeError(f"perm for group {group!r} must hold integers, got dtype {p.dtype}")
    if not np.array_equal(np.sort(p), np.arange(size)):
        bad = sorted(set(p.tolist()) ^ set(range(size)))[:5]
        raise ValueError(f"perm for group {group!r} is not a permutation of 0..{size - 1} "
                         f"(duplicates or values out of range; first differences {bad})")
    return p.astype(np.int64)


def level_index(level: Any, n: int) -> int:
    """A level index in ``[-n, n)`` as a non-negative int; IndexError naming the range."""
    i = integer(level, "level")
    if not -n <= i < n:
        raise IndexError(f"level {i} out of range: this family has {n} levels (0..{n - 1})")
    return i % n


def labels(y: Any, num_classes: int | None) -> None:
    """Raise TypeError unless ``y`` holds integers, ValueError unless they lie in
    ``[0, num_classes)`` (``num_classes`` None: the type check only)."""
    arr = np.asarray(y)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {arr.dtype}")
    if num_classes is not None and arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = arr[(arr < 0) | (arr >= num_classes)]
        raise ValueError(f"labels must lie in [0, {num_classes}); found {bad.size} outside "
                         f"(e.g. {int(bad[0])})")
