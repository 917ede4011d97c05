"""Minibatches of numpy arrays whose order is drawn from an explicit ``jax.random`` key.

The data stay in host memory as numpy; only the permutation comes from JAX, so the same key gives
the same batches on every backend and a training run is reproducible from its key alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np

__all__ = ["batches", "epochs", "num_batches"]


def num_batches(num_examples: int, batch_size: int, *, drop_last: bool = True) -> int:
    """Batches per epoch, e.g. to size an optax schedule.

    Example:
        >>> num_batches(10, 3), num_batches(10, 3, drop_last=False)
        (3, 4)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    return num_examples // batch_size if drop_last else -(-num_examples // batch_size)


def _order(n: int, key: jax.Array | None, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n)
    if key is None:
        raise ValueError("shuffle=True needs a key=jax.random.key(...)")
    return np.asarray(jax.random.permutation(key, n))


def batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    key: jax.Array | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of ``(x_batch, y_batch)`` pairs in an order drawn from ``key``.

    Every example appears exactly once per epoch (or not at all if it falls in the dropped
    remainder). The same key gives the same batches; different keys give different orders.

    Args:
        x: inputs, indexed along axis 0.
        y: labels (or any per-example array) with ``len(y) == len(x)``.
        batch_size: examples per batch.
        key: a ``jax.random.key``; required when ``shuffle`` is true.
        shuffle: draw a random permutation; if false, batches come in storage order.
        drop_last: drop the final short batch, so every batch has the same shape and a jitted
            step compiles once.

    Returns:
        An iterator over numpy batch pairs. Arguments are checked when this is called, not at
        the first ``next``, so a bad call fails where it is written.

    Example:
        >>> import jax, numpy as np
        >>> x, y = np.arange(10.0), np.arange(10)
        >>> [len(b) for b, _ in batches(x, y, 4, key=jax.random.key(0))]
        [4, 4]
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} examples but y has {len(y)}")
    count = num_batches(n, batch_size, drop_last=drop_last)
    if count == 0 and n > 0:
        # Zero batches would make a training loop silently do nothing.
        raise ValueError(
            f"batch_size {batch_size} exceeds the {n} examples with drop_last=True: no batches"
        )
    order = _order(n, key, shuffle)
    return _iterate(x, y, order, batch_size, count)


def _iterate(
    x: np.ndarray, y: np.ndarray, order: np.ndarray, batch_size: int, count: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for i in range(count):
        idx = order[i * batch_size : (i + 1) * batch_size]
        yield x[idx], y[idx]


def epochs(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    key: jax.Array,
    num_epochs: int,
    shuffle: bool = True,
    drop_last: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``num_epochs`` epochs of ``batches`` back to back, one flat stream of batch pairs.

    Epoch ``e`` is shuffled with ``jax.random.fold_in(key, e)``, so resuming at epoch ``e`` with
    the same key reproduces the remaining order without replaying the earlier epochs.
    There are ``num_epochs * num_batches(len(x), batch_size, drop_last=drop_last)`` batches.

    Example:
        >>> import jax, numpy as np
        >>> x, y = np.arange(10.0), np.arange(10)
        >>> sum(1 for _ in epochs(x, y, 5, key=jax.random.key(0), num_epochs=3))
        6
    """
    if num_epochs < 0:
        raise ValueError(f"num_epochs must be >= 0, got {num_epochs}")
    # Validate once, up front, for the same reason as in ``batches``.
    batches(x, y, batch_size, key=key, shuffle=False, drop_last=drop_last)
    return (
        pair
        for e in range(num_epochs)
        for pair in batches(
            x, y, batch_size, key=jax.random.fold_in(key, e), shuffle=shuffle, drop_last=drop_last
        )
    )
