"""Strict, atomic JSON side files (metrics, reports, manifests) for :mod:`subnets.io` (private).

The public names are :func:`subnets.io.write_json` and :func:`subnets.io.read_json`.

Example:
    >>> import os, tempfile
    >>> from subnets import _io_json
    >>> p = os.path.join(tempfile.mkdtemp(), "m.json")
    >>> _io_json.write_json(p, {"a": 1})
    >>> _io_json.read_json(p)
    {'a': 1}

References:
    RFC 8259 (JSON has no NaN or infinity).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from subnets._io_format import FormatError


def _strict(obj: Any, nonfinite: str, where: str) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _strict(v, nonfinite, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict(v, nonfinite, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic) or (hasattr(obj, "__array__") and np.ndim(obj) == 0):
        obj = np.asarray(obj).item()
    if isinstance(obj, float) and not math.isfinite(obj):
        if nonfinite == "null":
            return None
        raise ValueError(f"{where} is {obj}: JSON files hold finite numbers only")
    return obj


def write_json(path: str | os.PathLike[str], obj: Any, *, nonfinite: str = "error",
               indent: int | None = 1) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically (temp file, fsync, rename).

    The rule for NaN and infinity: ``nonfinite="error"`` (default) raises ``ValueError`` naming
    the key path before the disk is touched; ``"null"`` writes them as ``null`` (used for
    metrics, where "no value" is the honest record of a non-finite one). NumPy/JAX scalars
    become Python numbers; the output never holds ``NaN``/``Infinity``.

    Example:
        >>> import os, tempfile
        >>> from subnets import io
        >>> p = os.path.join(tempfile.mkdtemp(), "m.json")
        >>> io.write_json(p, {"acc": 0.5, "loss": float("inf")}, nonfinite="null")
        >>> io.read_json(p)
        {'acc': 0.5, 'loss': None}

    References:
        RFC 8259 (JSON has no NaN or infinity).
    """
    if nonfinite not in ("error", "null"):
        raise ValueError(f"nonfinite must be 'error' or 'null', got {nonfinite!r}")
    clean = _strict(obj, nonfinite, "$")
    text = json.dumps(clean, indent=indent, allow_nan=False) + "\n"
    from subnets.io import atomic_write

    atomic_write(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike[str], *, max_bytes: int = 64 << 20) -> Any:
    """Read a JSON file strictly; a damaged one raises ``FormatError`` naming the file."""
    from subnets.io import _read_bounded

    data = _read_bounded(path, max_bytes)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError(f"{os.fspath(path)}: not valid JSON ({e})") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard constant {name}")
