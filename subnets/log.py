"""Training record: per-epoch lines on stderr and ``metrics.jsonl`` in the run directory.

Every trainer (:func:`subnets.train.fit`, the LCS fit, REDS joint fine-tuning, IMP rounds,
Reconvene's training run) makes one :class:`EpochLog` and calls :meth:`EpochLog.epoch` after
each epoch. The record goes

- to ``<run dir>/metrics.jsonl``, one JSON object per epoch (``trainer``, ``epoch``,
  ``epochs``, ``loss``, ``accuracy``, ``seconds``, ...), appended with one write per line, when
  a run directory is set with :func:`run_dir` (the CLIs set it to ``--out``);
- to stderr as one plain line per epoch when stderr is not a terminal (CI, ``nohup``, a log
  file), where progress bars switch themselves off; on a terminal the bars show it instead.

:meth:`EpochLog.close` warns (:class:`TrainingWarning`) when a run ends at chance accuracy or
its loss has not fallen. :func:`quiet_compile_alarms` replaces XLA's "Very slow compile?"
banner by one line of explanation.

Example:
    >>> import io, json, os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> err = io.StringIO()
    >>> with run_dir(d):
    ...     log = EpochLog("demo", epochs=2, stream=err)
    ...     _ = log.epoch(1, loss=2.0, accuracy=0.5)
    ...     _ = log.epoch(2, loss=1.0, accuracy=0.9)
    >>> err.getvalue().splitlines()[0].startswith("demo epoch 1/2 loss 2.0000 accuracy 0.5000")
    True
    >>> [json.loads(s)["loss"] for s in open(os.path.join(d, "metrics.jsonl"))]
    [2.0, 1.0]

References:
    TensorBoard's scalar summaries and Keras' ``CSVLogger`` (one row per epoch); jax-ml/jax
    issue 26098 (no flag silences XLA's slow-compile alarm).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

_RUN_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("subnets_run_dir",
                                                                       default=None)
_TERMINAL: list[bool] = []  # set while quiet_compile_alarms has replaced fd 2


class TrainingWarning(UserWarning):
    """A run ended at chance accuracy, or its training loss did not fall."""


@contextlib.contextmanager
def run_dir(path: str | os.PathLike | None) -> Iterator[Path | None]:
    """Within the block, trainers append their epochs to ``path/metrics.jsonl``."""
    p = None if path is None else Path(path)
    if p is not None:
        p.mkdir(parents=True, exist_ok=True)
    token = _RUN_DIR.set(p)
    try:
        yield p
    finally:
        _RUN_DIR.reset(token)


def current_run_dir() -> Path | None:
    """The directory set by the innermost :func:`run_dir`, or None."""
    return _RUN_DIR.get()


def stderr_is_terminal() -> bool:
    """Whether the user's stderr is a terminal (also while fd 2 is being filtered)."""
    if _TERMINAL:
        return _TERMINAL[-1]
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class EpochLog:
    """One trainer's per-epoch record (see the module docstring).

    Args:
        trainer: name written with every epoch (e.g. ``"imp level 2"``).
        epochs: planned number of epochs (for ``epoch k/n`` lines).
        num_classes: enables the chance-accuracy warning of :meth:`close`.
        stream: where plain lines go (default ``sys.stderr``, and only when it is not a
            terminal; an explicit stream always gets them).
        quiet: no stderr lines (the file is still written).
    """

    def __init__(self, trainer: str, *, epochs: int, num_classes: int | None = None,
                 stream: TextIO | None = None, quiet: bool = False) -> None:
        self.trainer, self.epochs, self.num_classes = trainer, int(epochs), num_classes
        self.stream = stream if stream is not None else (
            None if quiet or stderr_is_terminal() else sys.stderr)
        self.directory = current_run_dir()
        self.rows: list[dict] = []
        self._t = time.perf_counter()

    def epoch(self, epoch: int, **metrics: Any) -> dict:
        """Record one finished epoch; ``seconds`` (since the last call) is added."""
        now = time.perf_counter()
        row = {"trainer": self.trainer, "epoch": int(epoch), "epochs": self.epochs,
               **{k: (float(v) if hasattr(v, "__float__") and not isinstance(v, int) else v)
                  for k, v in metrics.items()},
               "seconds": round(now - self._t, 3), "time": round(time.time(), 3)}
        self._t = now
        self.rows.append(row)
        if self.directory is not None:
            line = json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                               for k, v in row.items()}) + "\n"
            with open(self.directory / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(line)  # one write per line: a crash never leaves half a record
        if self.stream is not None:
            parts = " ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
            print(f"{self.trainer} epoch {epoch}/{self.epochs} {parts} ({row['seconds']:.1f} s)",
                  file=self.stream, flush=True)
        return row

    def close(self) -> list[str]:
        """Warn if the run ended at chance accuracy or with a loss that has not fallen."""
        problems = check_converged([r.get("loss") for r in self.rows],
                                   self.rows[-1].get("accuracy") if self.rows else None,
                                   self.num_classes)
        for msg in problems:
            warnings.warn(f"{self.trainer}: {msg}", TrainingWarning, stacklevel=2)
        return problems


def check_converged(losses: list, accuracy: float | None, num_classes: int | None) -> list[str]:
    """Reasons a run looks unconverged: loss not below 95% of its first epoch, or accuracy
    within 2 points of chance (``1 / num_classes``). Needs two epochs for the loss test.

    Example:
        >>> check_converged([2.3, 2.3], 0.11, 10)[0].split(";")[0]
        'training loss has not fallen (2.3000 -> 2.3000)'
    """
    out = []
    ls = [float(v) for v in losses if v is not None and math.isfinite(float(v))]
    if len(ls) >= 2 and ls[-1] > 0.95 * ls[0]:
        out.append(f"training loss has not fallen ({ls[0]:.4f} -> {ls[-1]:.4f}); train longer "
                   "or raise the learning rate")
    if accuracy is not None and num_classes and accuracy <= 1.0 / num_classes + 0.02:
        out.append(f"accuracy {accuracy:.4f} is at chance (1/{num_classes} = "
                   f"{1.0 / num_classes:.4f}); train longer or check the data")
    return out


COMPILE_NOTE = ("subnets: XLA is still compiling a training step (minutes are normal for a "
                "large step on a loaded CPU); training starts when it is done")

_ALARM = ("slow_operation_alarm", "Very slow compile?", "The operation took")


@contextlib.contextmanager
def quiet_compile_alarms(note: str | None = None) -> Iterator[None]:
    """Drop XLA's slow-compile banner from stderr within the block; print ``note`` instead.

    XLA writes the banner from C++ straight to file descriptor 2 and has no flag to silence
    it, so fd 2 is routed through a pipe whose reader thread forwards every line except the
    banner's (and its rows of asterisks), printing ``note`` once in its place.
    """
    fd = 2  # where XLA's C++ logging writes, whatever sys.stderr is
    try:
        os.fstat(fd)
    except OSError:
        yield
        return
    terminal = stderr_is_terminal()
    sys.stderr.flush()
    saved = os.dup(fd)
    r, w = os.pipe()
    os.dup2(w, fd)
    os.close(w)
    shown = [False]

    def pump() -> None:
        with os.fdopen(r, "rb") as src:
            skip = False
            for raw in src:
                text = raw.decode(errors="replace")
                if any(a in text for a in _ALARM):
                    skip = True
                    if note and not shown[0]:
                        os.write(saved, (note + "\n").encode())
                        shown[0] = True
                    continue
                if skip and (set(text.strip()) <= {"*"} or text.startswith("[Compiling")):
                    continue
                skip = False
                os.write(saved, raw)

    thread = threading.Thread(target=pump, daemon=True)
    _TERMINAL.append(terminal)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)  # closes the pipe's last write end: the reader sees EOF
        thread.join(timeout=5)
        os.close(saved)
        _TERMINAL.pop()
