"""Both splits of a data set at once, optionally cut to their first examples (quick runs).

The pipelines and benchmarks all start this way; one helper keeps the cut (the first ``limit``
examples of each split, not a random subset) the same everywhere.

Example:
    >>> from subnets.data.train_test import load_train_test
    >>> (x, y), (xt, yt) = load_train_test("digits", limit=100)
    >>> len(x), len(xt)
    (100, 100)
    >>> (x, y), (xt, yt) = load_train_test("digits", limit=100, test_limit=None)
    >>> len(x), len(xt)
    (100, 360)

References:
    The split definitions are :func:`subnets.data.load`'s.
"""

from __future__ import annotations

import os
from types import EllipsisType

import numpy as np

from subnets.data.loaders import load

Pair = tuple[np.ndarray, np.ndarray]


def load_train_test(name: str, *, limit: int | None = None,
                    test_limit: int | None | EllipsisType = ...,
                    data_dir: str | os.PathLike[str] | None = None) -> tuple[Pair, Pair]:
    """``((x, y), (x_test, y_test))`` of data set ``name``, cut to their first examples.

    Args:
        name: a :data:`subnets.data.DATASETS` name.
        limit: keep the first ``limit`` training examples; ``None`` keeps all.
        test_limit: the same for the test split; by default (``...``) the test split is cut to
            ``limit`` too, ``None`` keeps all of it.
        data_dir: passed to :func:`subnets.data.load`.

    Raises:
        ValueError: a limit < 1.
    """
    if test_limit is ...:
        test_limit = limit
    for what, n in (("limit", limit), ("test_limit", test_limit)):
        if n is not None and n < 1:
            raise ValueError(f"{what} must be >= 1, got {n}")
    x, y = load(name, "train", data_dir=data_dir)
    xt, yt = load(name, "test", data_dir=data_dir)
    return (x[:limit], y[:limit]), (xt[:test_limit], yt[:test_limit])
