"""Training data as one thing: arrays, or batches from an iterator (grain / tfds style).

Every trainer (:func:`subnets.train.fit`, :func:`subnets.subspace.fit`,
:func:`subnets.nested.finetune.finetune`, :func:`subnets.pruning.make_train_fn`) passes what it
was given through :func:`as_source` and asks the result for one epoch of ``(x, y)`` numpy
batches at a time. It accepts

- arrays ``x, y``: batches drawn by :func:`subnets.data.batches` from the epoch's key, exactly
  as before (bit-identical runs);
- an iterable of batches, each ``(x, y)`` or a dict ``{"image" or "x": ..., "label" or "y": ...}``
  (``tfds.as_numpy(ds)``, ``ds.as_numpy_iterator()``, a grain ``DataLoader``, a list): a
  re-iterable object is iterated afresh every epoch, a one-shot iterator (a generator,
  ``iter(loader)``) is one stream cut into epochs of ``steps_per_epoch`` batches, or gives one
  epoch when that is unknown;
- a callable ``epoch -> iterable`` (``epoch`` counts from 0), called once per epoch, so each
  epoch can restart its pipeline (and a resumed run can skip the epochs it has done).

Batch size and order are then the pipeline's, not the trainer's ``batch_size`` / ``key``. The
number of batches per epoch is ``len(data)`` when the object has one, ``steps_per_epoch`` when
given, else unknown: progress bars count without a total, and a trainer that must size a
schedule asks for ``tx=`` or ``as_source(data, steps_per_epoch=N)``. Every batch is checked
(its rank against the model's input, labels integer and in range) with errors naming the
batch and epoch. Evaluation data stays arrays (:func:`subnets.train.evaluate`).

Example:
    >>> import numpy as np
    >>> from subnets.data import as_source
    >>> x, y = np.zeros((6, 2), np.float32), np.arange(6) % 2
    >>> src = as_source(lambda e: ({"image": x[i:i + 3], "label": y[i:i + 3]} for i in (0, 3)))
    >>> [xb.shape for xb, _ in src.epoch(0)], src.steps_per_epoch
    ([(3, 2), (3, 2)], None)
    >>> gen = ((x[i:i + 2], y[i:i + 2]) for i in (0, 2, 4))
    >>> src = as_source(gen, steps_per_epoch=1)
    >>> [len(list(src.epoch(e))) for e in range(3)]
    [1, 1, 1]

References:
    tensorflow-datasets ``tfds.as_numpy`` and grain ``DataLoader`` (the batch formats taken).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from subnets import _checks
from subnets.data.batches import batches as _batches

__all__ = ["DataSource", "as_source"]

_X_KEYS, _Y_KEYS = ("image", "x"), ("label", "y")
_SAMPLE = 512  # examples kept from the first epoch for a trainer's per-epoch accuracy


class DataSource:
    """Epochs of ``(x, y)`` numpy batches from arrays or a pipeline; see :func:`as_source`.

    Attributes:
        kind: ``"arrays"``, ``"iterable"`` (re-iterable), ``"iterator"`` (one-shot) or
            ``"callable"``.
        steps_per_epoch: batches per epoch, or None when the pipeline does not say.
    """

    def __init__(self, kind: str, data: Any, *, y: Any = None, batch_size: int = 128,
                 steps_per_epoch: int | None = None) -> None:
        self.kind, self._data, self._y, self.batch_size = kind, data, y, batch_size
        self.steps_per_epoch = steps_per_epoch
        self.who = "data"
        self.input_shape: tuple[int, ...] | None = None
        self.num_classes: int | None = None
        self._sample: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending: list[Any] = []  # a peeked batch of a one-shot stream, not yet trained on
        self._next_epoch = 0  # one-shot streams: the epoch the stream is positioned at
        self._exhausted = False

    @property
    def is_arrays(self) -> bool:
        return self.kind == "arrays"

    @property
    def arrays(self) -> tuple[Any, Any] | None:
        """``(x, y)`` of an array source (None for a pipeline)."""
        return (self._data, self._y) if self.is_arrays else None

    @property
    def num_examples(self) -> int | None:
        """Examples of an array source (None for a pipeline)."""
        return len(self._data) if self.is_arrays else None

    def array_steps(self) -> int:
        """Batches per epoch of an array source (at least 1, as the trainers count them)."""
        return max(1, len(self._data) // self.batch_size)

    def expect(self, *, who: str, input_shape: Any = None,
               num_classes: int | None = None) -> DataSource:
        """Check every batch against a model: ``x.shape[1:] == input_shape``, labels in range.

        ``who`` (the trainer's name) starts every error message. Returns ``self``.
        """
        self.who = who
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.num_classes = num_classes
        return self

    def epoch(self, epoch: int, key: jax.Array | None = None
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of ``epoch`` (0-based); ``key`` shuffles arrays and is otherwise unused.

        Raises:
            ValueError: an array source without a key, an epoch with no batches, a one-shot
                iterator used up before the epochs are done, or a malformed batch.
        """
        if self.is_arrays:
            if key is None:
                raise ValueError(f"{self.who}: key= is required to shuffle array inputs")
            return _batches(self._data, self._y, self.batch_size, key=key)
        return self._checked(epoch, self._raw(epoch))

    def first_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The first batch of epoch 0 (checked), without using it up."""
        if self.is_arrays:
            return self._data[: self.batch_size], self._y[: self.batch_size]
        if self.kind == "iterator":
            if not self._pending:
                raw = next(iter(self._data), None)
                if raw is None:
                    raise ValueError(f"{self.who}: the data iterator gave no batches")
                self._pending.append(raw)
            raw = self._pending[0]
        else:
            raw = next(iter(self._raw(0)), None)
        if raw is None:
            raise ValueError(f"{self.who}: epoch 1 of the data gave no batches")
        return _pair(raw, self.who, 0, 0, self.input_shape, self.num_classes)

    def sample(self, n: int = _SAMPLE) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` training examples for a per-epoch accuracy: the first ``n`` of the arrays,
        or the first ``n`` a pipeline gave (available after its first batch)."""
        if self.is_arrays:
            return self._data[:n], self._y[:n]
        if not self._sample:
            raise ValueError(f"{self.who}: no batch seen yet")
        x = np.concatenate([b[0] for b in self._sample])[:n]
        return x, np.concatenate([b[1] for b in self._sample])[:n]

    def check_epochs(self, epochs: int) -> None:
        """Refuse, before any training, a one-shot iterator of unknown length for >1 epoch."""
        if self.kind == "iterator" and self.steps_per_epoch is None and epochs > 1:
            raise ValueError(
                f"{self.who}: a one-shot iterator gives one epoch, this run has {epochs}: "
                "pass a callable epoch -> iterator (e.g. lambda e: iter(loader)), a re-iterable "
                "object, or as_source(iterator, steps_per_epoch=N) for a repeating stream")

    def unknown_steps(self, need: str) -> ValueError:
        """The error for a trainer that must know the steps per epoch (``need``: the cure)."""
        return ValueError(
            f"{self.who}: the number of batches per epoch of this {self.kind} is unknown (it has "
            f"no len()); {need}, or wrap it as subnets.data.as_source(data, steps_per_epoch=N)")

    def _raw(self, epoch: int) -> Iterator[Any]:
        if self.kind == "iterable":
            it: Iterator[Any] = iter(self._data)
        elif self.kind == "callable":
            got = self._data(epoch)
            if not isinstance(got, Iterable):
                raise TypeError(f"{self.who}: data({epoch}) returned a {type(got).__name__}, "
                                "expected an iterable of (x, y) batches")
            it = iter(got)
        else:
            return self._stream(epoch)
        return it if self.steps_per_epoch is None else self._exactly(epoch, it)

    def _stream(self, epoch: int) -> Iterator[Any]:
        """One epoch of the one-shot stream (skipping the epochs a resumed run has done)."""
        if self._exhausted or (self.steps_per_epoch is None and self._next_epoch > 0):
            raise ValueError(
                f"{self.who}: the one-shot data iterator was exhausted after "
                f"{self._next_epoch} epoch(s) and cannot give epoch {epoch + 1} of this "
                "training: pass a callable epoch -> iterator (e.g. lambda e: iter(loader)) so "
                "each epoch restarts")
        it = itertools.chain(self._pending, self._data)
        self._pending = []
        if self.steps_per_epoch is None:
            self._next_epoch = epoch + 1
            return it
        skip = max(0, epoch - self._next_epoch) * self.steps_per_epoch
        for _ in itertools.islice(it, skip):
            pass
        self._next_epoch = epoch + 1
        return self._exactly(epoch, it, one_shot=True)

    def _exactly(self, epoch: int, it: Iterator[Any], one_shot: bool = False) -> Iterator[Any]:
        n = 0
        for raw in itertools.islice(it, self.steps_per_epoch):
            n += 1
            yield raw
        if n < self.steps_per_epoch:
            if one_shot:
                self._exhausted = True
                raise ValueError(
                    f"{self.who}: the one-shot data iterator was exhausted after {n} of the "
                    f"{self.steps_per_epoch} batches of epoch {epoch + 1}: pass a callable "
                    "epoch -> iterator (e.g. lambda e: iter(loader)) so each epoch restarts")
            raise ValueError(f"{self.who}: epoch {epoch + 1} of the data gave {n} batches, "
                             f"steps_per_epoch says {self.steps_per_epoch}")

    def _checked(self, epoch: int, it: Iterator[Any]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = 0
        for n, raw in enumerate(it, 1):
            xb, yb = _pair(raw, self.who, epoch, n - 1, self.input_shape, self.num_classes)
            if sum(len(b[1]) for b in self._sample) < _SAMPLE:
                self._sample.append((xb.copy(), yb.copy()))
            yield xb, yb
        if n == 0:
            raise ValueError(f"{self.who}: epoch {epoch + 1} of the data gave no batches")


def _pair(raw: Any, who: str, epoch: int, i: int, input_shape: tuple[int, ...] | None,
          num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    where = f"{who}: batch {i} of epoch {epoch + 1}"
    if isinstance(raw, Mapping):
        xk = next((k for k in _X_KEYS if k in raw), None)
        yk = next((k for k in _Y_KEYS if k in raw), None)
        if xk is None or yk is None:
            raise ValueError(f"{where} is a dict with keys {sorted(map(str, raw))}: expected "
                             "'image' or 'x' for the inputs and 'label' or 'y' for the labels")
        xb, yb = raw[xk], raw[yk]
    elif isinstance(raw, tuple | list) and len(raw) == 2:
        xb, yb = raw
    else:
        kind = type(raw).__name__ + (f" of length {len(raw)}" if isinstance(raw, tuple | list)
                                     else "")
        raise ValueError(f"{where} is a {kind}: expected (x, y) or a dict with 'image'/'x' and "
                         "'label'/'y' (to train on arrays, pass x and y separately)")
    xb, yb = np.asarray(xb), np.asarray(yb)
    if xb.ndim == 0 or len(xb) == 0:
        raise ValueError(f"{where}: x has shape {xb.shape}, expected a non-empty batch")
    if input_shape is not None and xb.shape[1:] != input_shape:
        raise ValueError(f"{where}: x has shape {xb.shape} (rank {xb.ndim}), the model takes "
                         f"(batch, {', '.join(map(str, input_shape))}) "
                         f"(rank {len(input_shape) + 1})")
    if yb.shape != (len(xb),):
        raise ValueError(f"{where}: y has shape {yb.shape}, expected ({len(xb)},): one integer "
                         "label per example")
    try:
        _checks.labels(yb, num_classes)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None
    return xb, yb


def as_source(data: Any, y: Any = None, *, batch_size: int = 128,
              steps_per_epoch: int | None = None) -> DataSource:
    """Normalise training data: arrays ``(data, y)``, an iterable of batches, or ``epoch -> it``.

    Args:
        data: inputs (with ``y``), an iterable of ``(x, y)`` / ``{"image", "label"}`` batches,
            a callable ``epoch -> iterable``, or a :class:`DataSource` (returned as it is).
        y: labels when ``data`` holds the inputs; None for a pipeline.
        batch_size: examples per batch of an array source (a pipeline batches itself).
        steps_per_epoch: batches per epoch of a pipeline (default ``len(data)`` if it has one);
            a one-shot iterator is then cut into epochs of that many batches.

    Returns:
        A :class:`DataSource`.

    Raises:
        ValueError / TypeError: naming what is wrong with ``data`` or ``y``.

    Example:
        >>> import numpy as np
        >>> as_source(np.zeros((4, 2)), np.zeros(4, int), batch_size=2).kind
        'arrays'
        >>> as_source([(np.zeros((2, 2)), np.zeros(2, int))]).steps_per_epoch
        1
    """
    if isinstance(data, DataSource):
        if y is not None:
            raise ValueError("y must be None when the data is already a DataSource")
        return data
    if y is not None:
        if isinstance(data, Mapping) or not hasattr(data, "__len__"):
            raise TypeError(f"with y given, x must be an array, got {type(data).__name__}; "
                            "pass a pipeline of (x, y) batches alone (y=None)")
        if len(y) != len(data):
            raise ValueError(f"x has {len(data)} examples but y has {len(y)}")
        return DataSource("arrays", data, y=y, batch_size=batch_size)
    if isinstance(data, np.ndarray | jax.Array):
        raise ValueError("y is missing: pass labels with array inputs, or a pipeline of "
                         "(x, y) batches")
    if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool)
                                        or int(steps_per_epoch) != steps_per_epoch
                                        or steps_per_epoch < 1):
        raise ValueError(f"steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}")
    if isinstance(data, Iterable) and not isinstance(data, str | bytes | Mapping):
        kind = "iterator" if iter(data) is data else "iterable"
        if steps_per_epoch is None and kind == "iterable":
            steps_per_epoch = _length(data)
        return DataSource(kind, data, steps_per_epoch=steps_per_epoch)
    if callable(data):
        return DataSource("callable", data, steps_per_epoch=steps_per_epoch)
    raise TypeError(f"training data must be arrays x, y, an iterable of (x, y) batches or a "
                    f"callable epoch -> iterable, got {type(data).__name__}")


def _length(data: Any) -> int | None:
    try:
        n = len(data)
    except TypeError:  # no len, or a pipeline of unknown cardinality
        return None
    return n if n > 0 else None


def training_source(net: Any, x: Any, y: Any, *, batch_size: int, who: str) -> DataSource:
    """:func:`as_source` checked against ``net`` (input shape, ``num_classes``) for trainer
    ``who``."""
    src = as_source(x, y, batch_size=batch_size)
    return src.expect(who=who, input_shape=getattr(net, "input_shape", None),
                      num_classes=getattr(net, "num_classes", None))


Source = DataSource | Iterable | Callable[[int], Iterable]
