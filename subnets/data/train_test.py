"""Both splits of a data set at once, optionally cut to their first examples (quick runs).

The pipelines and benchmarks all start this way; one helper keeps the cut (the first ``limit``
examples of each split, not a random subset) the same everywhere.

Example:
    >>> from subnets.data.train_test import load_train_test
    >>> (x, y), (xt, yt) = load_train_test("digits", limit=100)
    >>> len(x), len(xt)
    (100, 100)

References:
    The split definitions are :func:`subnets.data.load`'s.
"""

from __future__ import annotations

import os

import numpy as np

from subnets.data.loaders import load

Pair = tuple[np.ndarray, np.ndarray]


def load_train_test(name: str, *, limit: int | None = None,
                    data_dir: str | os.PathLike[str] | None = None) -> tuple[Pair, Pair]:
    """``((x, y), (x_test, y_test))`` of data set ``name``, each cut to ``limit`` examples.

    Args:
        name: a :data:`subnets.data.DATASETS` name.
        limit: keep the first ``limit`` examples of each split; ``None`` keeps all.
        data_dir: passed to :func:`subnets.data.load`.

    Raises:
        ValueError: ``limit < 1``.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    train = load(name, "train", data_dir=data_dir)
    test = load(name, "test", data_dir=data_dir)
    if limit is not None:
        train = (train[0][:limit], train[1][:limit])
        test = (test[0][:limit], test[1][:limit])
    return train, test
