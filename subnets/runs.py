"""Run provenance: a manifest per output folder, config-mismatch refusal, ``--force``, a lock.

Every run directory holds ``manifest.json``::

    {"command": "nest", "argv": [...], "config": {...}, "seed": 0, "version": "0.1.0",
     "data_fingerprint": "sha256:...", "started": "...", "ended": "...",
     "status": "running" | "complete" | "failed" | "interrupted", "resumed": [...]}

A rerun into the same folder resumes only if the command, the identity keys of its config and
the data fingerprint match; otherwise :func:`start` raises :class:`RunError` naming the keys
that differ. ``force=True`` moves the old folder aside to ``OUT.old-<UTC timestamp>`` (nothing
is deleted) and starts afresh. ``OUT/.lock`` (pid, host, time) keeps a second process out; a
lock whose pid no longer runs on this host is stale and taken over with a warning.

Example:
    >>> import tempfile
    >>> from subnets import runs
    >>> out = tempfile.mkdtemp() + "/run"
    >>> with runs.start(out, "demo", {"seed": 0, "epochs": 1}) as run:
    ...     run.resumed
    False
    >>> runs.read_manifest(out)["status"]
    'complete'
    >>> try:
    ...     runs.start(out, "demo", {"seed": 1, "epochs": 1})
    ... except runs.RunError as e:
    ...     print(str(e).split(": ", 1)[1].split(";")[0])
    made by a different configuration: config.seed (0 in the folder, 1 now)

References:
    OpenLTH's run folders (one config per folder), without the hash-named directories.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import socket
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from subnets import io

MANIFEST = "manifest.json"
LOCK = ".lock"


class RunError(ValueError):
    """The output folder belongs to another run, another configuration, or another process."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version() -> str:
    try:
        from subnets import __version__

        return str(__version__)
    except ImportError:
        return "unknown"


def fingerprint(*arrays: Any) -> str:
    """``sha256:<hex>`` over the dtypes, shapes and bytes of ``arrays`` (the data identity)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return "sha256:" + h.hexdigest()


def read_manifest(out: str | os.PathLike) -> dict | None:
    """The run manifest of ``out``, or None when there is none."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    m = io.read_json(path)
    if not isinstance(m, dict):
        raise RunError(f"{path}: not a run manifest (expected a JSON object)")
    return m


def differences(old: Mapping, new: Mapping, keys: Iterable[str] | None = None) -> list[str]:
    """``["key (old in the folder, new now)", ...]`` for the ``keys`` (default all) that differ."""
    keys = sorted(set(old) | set(new)) if keys is None else list(keys)
    out = []
    for k in keys:
        a, b = old.get(k, "<unset>"), new.get(k, "<unset>")
        if _norm(a) != _norm(b):
            out.append(f"{k} ({a!r} in the folder, {b!r} now)")
    return out


def _norm(v: Any) -> Any:
    return [_norm(x) for x in v] if isinstance(v, list | tuple) else v


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire(out: Path) -> Path:
    lock = out / LOCK
    info = f'{{"pid": {os.getpid()}, "host": "{socket.gethostname()}", "since": "{_now()}"}}\n'
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                held = io.read_json(lock)
            except (OSError, io.FormatError):
                held = {}
            pid, host = held.get("pid"), held.get("host")
            if (isinstance(pid, int) and host == socket.gethostname() and pid != os.getpid()
                    and not _pid_alive(pid)):
                warnings.warn(f"{lock}: removing the stale lock of pid {pid} (no longer running)",
                              stacklevel=3)
                lock.unlink(missing_ok=True)
                continue
            raise RunError(f"{out}: in use by pid {pid} on {host} since {held.get('since')} "
                           f"(lock {lock}); wait for it to finish, or delete the lock if that "
                           "process is gone") from None
        with os.fdopen(fd, "w") as f:
            f.write(info)
        return lock
    raise RunError(f"{lock}: could not take the lock")


def _move_aside(out: Path) -> Path:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    dest = out.with_name(f"{out.name}.old-{stamp}")
    n = 1
    while dest.exists():
        dest = out.with_name(f"{out.name}.old-{stamp}-{n}")
        n += 1
    os.rename(out, dest)
    return dest


_ACTIVE: list[Run] = []


def active() -> Run | None:
    """The run this process opened last (for the CLI's Ctrl-C message), or None."""
    return _ACTIVE[-1] if _ACTIVE else None


class Run:
    """An open run: holds the lock, records the end in the manifest. Use as a context manager.

    Attributes:
        out: the run folder.
        manifest: the manifest as written.
        resumed: whether an earlier run of the same configuration was found.
        moved_to: where ``force`` moved the old folder, or None.
        saved: a short description of what is safely on disk (for the Ctrl-C message).
    """

    def __init__(self, out: Path, manifest: dict, resumed: bool, moved_to: Path | None,
                 lock: Path) -> None:
        self.out, self.manifest, self.resumed, self.moved_to = out, manifest, resumed, moved_to
        self._lock = lock
        self.saved = "nothing yet"

    def _write(self) -> None:
        io.write_json(self.out / MANIFEST, self.manifest, nonfinite="null")

    def mark_saved(self, what: str) -> None:
        """Record that ``what`` (a checkpoint, a file) is safely on disk."""
        self.saved = what
        self.update(saved=what)

    def check_data(self, data_fingerprint: str) -> None:
        """Compare the data with the earlier run's (once loaded), then record it.

        Raises:
            RunError: the folder's run was made on different data.
        """
        old = self.manifest.get("data_fingerprint")
        if self.resumed and old not in (None, data_fingerprint):
            raise RunError(f"{self.out}: made on different data (fingerprint {old[:19]}... in "
                           f"the folder, {data_fingerprint[:19]}... now); pass --force to move "
                           "the old run aside and start afresh")
        self.update(data_fingerprint=data_fingerprint)

    def update(self, **fields: Any) -> None:
        """Record extra fields (outputs, stages done) in the manifest, atomically."""
        self.manifest.update(fields)
        self._write()

    def finish(self, status: str = "complete", error: str | None = None) -> None:
        """Record the end and the status, release the lock."""
        self.manifest.update(status=status, ended=_now())
        if error is not None:
            self.manifest["error"] = error
        try:
            self._write()
        finally:
            self._lock.unlink(missing_ok=True)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.finish("complete")
        elif issubclass(kind, KeyboardInterrupt):
            self.finish("interrupted")
        else:
            self.finish("failed", error=f"{kind.__name__}: {str(exc).splitlines()[0][:300]}"
                        if str(exc) else kind.__name__)


def start(out: str | os.PathLike, command: str, config: Mapping[str, Any], *,
          identity: Iterable[str] | None = None, seed: int | None = None,
          data_fingerprint: str | None = None, force: bool = False,
          require_resume: bool = False, argv: list[str] | None = None) -> Run:
    """Open (create, resume or, with ``force``, replace) the run folder ``out``.

    Args:
        out: the run folder.
        command: the command name (``nest``, ``prune``...); a folder of another command is
            refused.
        config: the full configuration (JSON-serialisable), recorded in the manifest.
        identity: the config keys a resume must match (default: all of them). Keys outside
            it (a later stage's settings) may change between runs; the manifest records the new
            values.
        seed: the run's seed (recorded; also compared through ``config``).
        data_fingerprint: from :func:`fingerprint`; compared too.
        force: move an existing folder aside to ``OUT.old-<timestamp>`` and start afresh.
        require_resume: raise if there is no earlier run to resume (``--resume``).
        argv: the command line, recorded.

    Raises:
        RunError: the folder is locked by a live process, belongs to another command or
            configuration (naming the differing keys), or is not a run folder.
    """
    out = Path(out)
    config = dict(config)
    moved = None
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a directory")
    old = read_manifest(out) if out.is_dir() else None
    if out.is_dir() and force and any(out.iterdir()):
        lock = _acquire(out)  # never move a folder another process is writing
        lock.unlink()
        moved = _move_aside(out)
        old = None
    elif old is None and out.is_dir() and any(p.name != LOCK for p in out.iterdir()):
        raise RunError(f"{out}: exists, is not empty and holds no {MANIFEST} (not a subnets "
                       "run folder); choose another --out, or pass --force to move it aside")
    if old is not None and old.get("status") == "failed" and not old.get("saved"):
        old = None  # a run that failed before saving anything holds nothing to protect
    if old is not None:
        new = {"command": command, **{f"config.{k}": v for k, v in config.items()},
               "data_fingerprint": data_fingerprint}
        before = {"command": old.get("command"),
                  **{f"config.{k}": v for k, v in (old.get("config") or {}).items()},
                  "data_fingerprint": old.get("data_fingerprint")}
        keys = ["command", *(f"config.{k}" for k in (identity if identity is not None
                                                     else sorted(set(config)
                                                                 | set(old.get("config", {}))))),
                *(["data_fingerprint"] if data_fingerprint is not None else [])]
        diff = differences(before, new, keys)
        if diff:
            raise RunError(f"{out}: made by a different configuration: {', '.join(diff)}; "
                           "rerun with the same settings to resume, or pass --force to move "
                           f"the old run aside (to {out.name}.old-<timestamp>) and start afresh")
    elif require_resume:
        raise RunError(f"{out}: nothing to resume (no {MANIFEST}); drop --resume to start a run")
    out.mkdir(parents=True, exist_ok=True)
    lock = _acquire(out)
    try:
        manifest = {
            "command": command, "argv": list(sys.argv if argv is None else argv),
            "config": config, "seed": seed, "version": _version(),
            "data_fingerprint": data_fingerprint or (old or {}).get("data_fingerprint"),
            "started": old.get("started", _now()) if old else _now(), "ended": None,
            "status": "running", "host": socket.gethostname(), "pid": os.getpid(),
            "resumed": [*old.get("resumed", []), _now()] if old else [],
            "saved": old.get("saved") if old else None,
        }
        if moved is not None:
            manifest["previous_run_moved_to"] = str(moved)
        run = Run(out, manifest, old is not None, moved, lock)
        run.saved = manifest["saved"] or "nothing yet"
        run._write()
        _ACTIVE.append(run)
    except BaseException:
        lock.unlink(missing_ok=True)
        raise
    return run
