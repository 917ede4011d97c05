"""Atomic, verified checkpoints of any pytree of arrays (through orbax) plus JSON metadata.

A checkpoint directory holds numbered versions and a pointer::

    DIR/latest            "v000003\\n": the current version (replaced by one atomic rename)
    DIR/v000003/state/    the orbax PyTree checkpoint
    DIR/v000003/manifest.json
                          meta, the sha256 and size of every file under state/, and the
                          sha256 of the manifest itself
    DIR/v000002/          the previous version, kept until a newer one is complete

:func:`save` writes the new version into a hidden sibling temp folder, fsyncs every file,
renames the folder into place, then switches ``latest`` with one atomic rename, and only then
deletes versions older than the previous one. At every instant a complete, loadable checkpoint
exists (the old one until the switch, the new one after). :func:`restore` checks every hash
before orbax reads a byte; a damaged version is named (its file) in a warning and skipped in
favour of the previous one. :func:`exists` is true only when some version verifies.

Checkpoints of the layout before versions (``DIR/state/`` orbax folder + ``DIR/meta.json``,
written by subnets up to the versioned layout) are still read: they carry no hashes, so they are
checked by restoring them (orbax's own metadata must be present and every array readable), and
they are the last resort after every version. A new :func:`save` into such a folder writes
``v000001`` beside them and never deletes them.

Orbax restores trees as dicts and lists. Pass ``like=`` (a tree of the saved structure, e.g. a
freshly initialised training state) to :func:`restore`, or use :func:`save_state` /
:func:`restore_state`, to get back the saved types: optax named tuples, the pruning wrapper's
``MaskedState``, JAX arrays on the template's devices.

Nothing non-finite is saved: a float leaf holding NaN or infinity raises ``ValueError`` naming
its path (``allow_nonfinite=True`` to opt out).

Example:
    >>> import tempfile, numpy as np
    >>> from subnets import checkpoint
    >>> d = tempfile.mkdtemp()
    >>> checkpoint.save(d + "/ck", {"params": {"w": np.ones(3, np.float32)}}, meta={"step": 7})
    >>> tree, meta = checkpoint.restore(d + "/ck")
    >>> meta["step"], tree["params"]["w"].tolist(), checkpoint.exists(d + "/ck")
    (7, [1.0, 1.0, 1.0], True)

References:
    orbax-checkpoint documentation (PyTreeCheckpointer); the write-temp-fsync-rename pattern of
    POSIX ``rename(2)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

from subnets import _checkpoint_tree, _finite
from subnets.io import _fsync_dir, atomic_write, write_json

FORMAT = "subnets-checkpoint"
FORMAT_VERSION = 1
KEEP = 2  # the current version and the one before it
_VERSION_RE = re.compile(r"^v(\d{6,})$")
_HASH_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or damaged; the message names the file."""


def _checkpointer():
    import orbax.checkpoint as ocp

    if jax.process_count() == 1:
        return ocp.PyTreeCheckpointer()
    # Multi-process run: the trees here are host numpy arrays that one process writes alone
    # (subnets.parallel.is_primary) or each reads alone; orbax must not wait for the others.
    me = jax.process_index()
    opts = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=opts),
                            multiprocessing_options=opts)


def _fault(phase: str) -> None:
    """Test hook: ``SUBNETS_CHECKPOINT_FAULT=phase`` SIGKILLs the process at ``phase``.

    ``phase@N`` kills at the N-th save of this process (1-based); ``phase:sleep=S`` sleeps S
    seconds there instead (so a test can send the signal itself).
    """
    spec = os.environ.get("SUBNETS_CHECKPOINT_FAULT")
    if not spec:
        return
    name, _, action = spec.partition(":")
    name, _, nth = name.partition("@")
    if name != phase or (nth and int(nth) != _SAVES[0]):
        return
    if action.startswith("sleep="):
        import time

        time.sleep(float(action[6:]))
        return
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


_SAVES = [0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _fsync_tree(root: Path) -> None:
    for p in _files(root):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for folder in sorted({p.parent for p in root.rglob("*")} | {root}):
        _fsync_dir(str(folder))


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest()


def _versions(d: Path) -> list[str]:
    """Version folder names, newest first."""
    try:
        names = [p.name for p in d.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(names, key=lambda n: int(n[1:]), reverse=True)


def _pointer(d: Path) -> str | None:
    try:
        name = (d / "latest").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if _VERSION_RE.match(name) else None


def _verify(version: Path) -> dict:
    """The manifest of ``version`` after checking every hash; CheckpointError naming the file."""
    mpath = version / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{mpath}: missing (incomplete checkpoint)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{mpath}: unreadable ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{mpath}: not a subnets checkpoint manifest")
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    if manifest.get("sha256") != _digest(body):
        raise CheckpointError(f"{mpath}: manifest checksum mismatch (damaged)")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{mpath}: lists no array files")
    state = version / "state"
    present = {p.relative_to(state).as_posix() for p in _files(state)} if state.is_dir() else set()
    missing = sorted(set(files) - present)
    if missing:
        raise CheckpointError(f"{state / missing[0]}: missing ({len(missing)} file(s) listed in "
                              f"{mpath} are absent)")
    for rel, (size, digest) in sorted(files.items()):
        p = state / rel
        if p.stat().st_size != size:
            raise CheckpointError(f"{p}: {p.stat().st_size} bytes, the manifest says {size} "
                                  "(truncated or damaged)")
        if _sha256(p) != digest:
            raise CheckpointError(f"{p}: sha256 mismatch (damaged)")
    return manifest


def _candidates(d: Path) -> list[str]:
    """Versions to try, best first: the pointer's, then the others newest first."""
    names = _versions(d)
    first = _pointer(d)
    if first in names:
        names.remove(first)
        names.insert(0, first)
    return names


def _is_legacy(d: Path) -> bool:
    """``d`` holds a checkpoint of the layout before versions: ``state/`` + ``meta.json``."""
    return (d / "state").is_dir() and (d / "meta.json").is_file()


def _legacy_meta(d: Path) -> dict:
    """The ``meta.json`` of an old-layout checkpoint; CheckpointError naming the file."""
    mpath = d / "meta.json"
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{mpath}: unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{mpath}: not a JSON object")
    marker = d / "state" / "_METADATA"
    if not marker.is_file():
        raise CheckpointError(f"{marker}: missing (incomplete old-layout checkpoint)")
    return meta


def _orbax_restore(state: Path) -> Any:
    try:
        return _checkpointer().restore(str(state))
    except OSError as e:
        raise CheckpointError(f"{state}: {e}") from None
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types
        raise CheckpointError(f"{state}: orbax could not read it "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def _load_legacy(d: Path) -> tuple[Any, dict]:
    """Tree and meta of an old-layout checkpoint (no hashes: checked by reading it all)."""
    meta = _legacy_meta(d)
    return _orbax_restore(d / "state"), meta


def _select(d: Path, *, warn: bool = True) -> tuple[Path, dict] | None:
    problems = []
    for name in _candidates(d):
        try:
            manifest = _verify(d / name)
        except (CheckpointError, OSError) as e:
            problems.append(str(e))
            continue
        if warn:
            for p in problems:
                warnings.warn(f"skipping damaged checkpoint: {p}; using {d / name}",
                              stacklevel=3)
        return d / name, manifest
    if _is_legacy(d):
        try:
            _, meta = _load_legacy(d)
        except CheckpointError:
            return None
        return d, {"meta": meta}
    return None


def exists(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds at least one complete checkpoint whose hashes verify.

    An old-layout checkpoint (``state/`` + ``meta.json``, no hashes) counts when orbax reads it.
    """
    return _select(Path(directory).absolute(), warn=False) is not None


def read_meta(directory: str | os.PathLike) -> dict | None:
    """The ``meta`` of the newest version whose hashes verify (the one :func:`restore` loads;
    its arrays are not read), or None if ``directory`` holds no usable checkpoint: to decide
    whether a checkpoint belongs to this run before restoring it."""
    found = _select(Path(directory).absolute(), warn=False)
    return None if found is None else found[1]["meta"]


def save(directory: str | os.PathLike, tree: Any, *, meta: dict | None = None,
         overwrite: bool = True, allow_nonfinite: bool = False) -> None:
    """Save a pytree of arrays and JSON-serialisable ``meta`` as a new version of ``directory``.

    Args:
        directory: the checkpoint directory (created if needed).
        tree: any pytree of arrays (dicts, lists, named tuples of arrays).
        meta: JSON-serialisable dict (finite numbers only).
        overwrite: if False and a checkpoint exists, raise FileExistsError.
        allow_nonfinite: save float leaves holding NaN/inf instead of raising.

    Raises:
        ValueError: a float leaf is not finite (naming its path), or ``meta`` holds NaN/inf.
        OSError: the disk is full or read-only; the previous checkpoint is untouched.
    """
    d = Path(directory).absolute()
    d.mkdir(parents=True, exist_ok=True)
    if not overwrite and exists(d):
        raise FileExistsError(f"checkpoint {d} exists and overwrite=False")
    tree = jax.tree.map(np.asarray, tree)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        where = f"checkpoint {d}: leaf {jax.tree_util.keystr(path)}"
        if leaf.dtype.kind not in "biufc" and leaf.dtype.name != "bfloat16":
            raise TypeError(f"{where} has dtype {leaf.dtype}; only numeric arrays can be "
                            "saved (put strings and other values in meta=)")
        if not allow_nonfinite:
            _finite.check_array(leaf, where)
    meta = dict(meta or {})
    _SAVES[0] += 1
    names = _versions(d)
    number = int(names[0][1:]) + 1 if names else 1
    name = f"v{number:06d}"
    tmp = d / f".{name}.{secrets.token_hex(4)}.tmp"
    try:
        tmp.mkdir()
        _checkpointer().save(str(tmp / "state"), tree)
        _fault("after_orbax")
        state = tmp / "state"
        files = {p.relative_to(state).as_posix(): [p.stat().st_size, _sha256(p)]
                 for p in _files(state)}
        body = {"format": FORMAT, "version": FORMAT_VERSION, "meta": meta, "files": files}
        write_json(tmp / "manifest.json", {**body, "sha256": _digest(body)})
        _fsync_tree(tmp)
        _fault("after_manifest")
        os.rename(tmp, d / name)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(str(d))
    _fault("after_rename")
    atomic_write(d / "latest", (name + "\n").encode("ascii"))
    _fault("after_pointer")
    _prune(d, keep=name)


def _remove(path: Path, tries: int = 5) -> None:
    """Delete a folder, retrying while a writer thread that outlived its error still adds files."""
    for i in range(tries):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.05 * (i + 1))


def _prune(d: Path, *, keep: str) -> None:
    """Delete versions older than the one before ``keep``, and abandoned temp folders."""
    older = [n for n in _versions(d) if int(n[1:]) < int(keep[1:])]
    for n in older[KEEP - 1:]:
        shutil.rmtree(d / n, ignore_errors=True)
    for p in d.glob(".v*.tmp"):
        shutil.rmtree(p, ignore_errors=True)


def restore(directory: str | os.PathLike, *, like: Any = None) -> tuple[Any, dict]:
    """Load ``(tree, meta)`` of the newest verified version; arrays come back as numpy.

    A damaged version is skipped with a warning naming its file, in favour of the previous one;
    an old-layout checkpoint (``state/`` + ``meta.json``) in the folder is the last resort.

    Args:
        directory: the checkpoint directory.
        like: optional tree of the saved structure (e.g. a freshly initialised optimiser
            state): the tree comes back in its structure and leaf types (optax named tuples,
            JAX arrays on the same devices) instead of orbax's dicts and lists.

    Raises:
        FileNotFoundError: ``directory`` holds no checkpoint at all.
        CheckpointError: every version is damaged (the message names the files), or the tree
            does not match ``like`` (naming the leaf).

    Example:
        >>> import tempfile, jax.numpy as jnp, optax
        >>> from subnets import checkpoint
        >>> opt = optax.sgd(0.1, momentum=0.9).init({"w": jnp.ones(2)})
        >>> d = tempfile.mkdtemp() + "/ck"
        >>> checkpoint.save(d, {"opt": opt})
        >>> type(checkpoint.restore(d)[0]["opt"]).__name__  # orbax's plain containers
        'list'
        >>> back, _ = checkpoint.restore(d, like={"opt": opt})
        >>> type(back["opt"][0]).__name__
        'TraceState'
    """
    d = Path(directory).absolute()
    legacy = _is_legacy(d)
    if not _candidates(d) and not legacy:
        raise FileNotFoundError(f"{d}: no checkpoint (no v*/ version folders, no old-layout "
                                "state/ + meta.json)")
    problems: list[str] = []
    found = None
    for name in _candidates(d):
        try:
            manifest = _verify(d / name)
            found = (_orbax_restore(d / name / "state"), manifest["meta"], d / name)
            break
        except (CheckpointError, OSError) as e:
            problems.append(str(e))
    if found is None and legacy:
        try:
            found = (*_load_legacy(d), d / "state")
        except CheckpointError as e:
            problems.append(str(e))
    if found is None:
        raise CheckpointError("no usable checkpoint: " + "; ".join(problems))
    tree, meta, used = found
    for p in problems:
        warnings.warn(f"skipping damaged checkpoint: {p}; using {used}", stacklevel=2)
    tree = jax.tree.map(np.asarray, tree)
    if like is not None:
        try:
            tree = _checkpoint_tree.like(tree, like, str(used))
        except ValueError as e:
            raise CheckpointError(str(e)) from None
    return tree, meta


def save_state(directory: str | os.PathLike, state: Any, *, epoch: int, epochs: int,
               meta: dict | None = None) -> None:
    """Save a training state (any pytree of arrays) after ``epoch`` of ``epochs``, to resume.

    The leaves are stored flat, in ``jax.tree.leaves`` order, and the meta records each one's
    key path, dtype and shape; :func:`restore_state` puts them back into the structure and
    types of a freshly initialised state and refuses one of another structure.
    """
    leaves = jax.tree.leaves(state)
    save(directory, {f"{i:06d}": np.asarray(a) for i, a in enumerate(leaves)},
         meta={**(meta or {}), "epoch": int(epoch), "epochs": int(epochs),
               "leaves": _checkpoint_tree.describe(state)})


def restore_state(directory: str | os.PathLike, template: Any, *, epochs: int
                  ) -> tuple[Any, int]:
    """``(state, epochs_done)`` from :func:`save_state`, shaped and typed like ``template``.

    The state has ``template``'s pytree structure (optax named tuples, the pruning wrapper's
    ``MaskedState``), dtypes, and leaf types: a JAX array comes back as a JAX array on the
    template leaf's sharding, so a jitted step runs on it without recompiling, and one more
    step gives the same result as it would have in the saved run.

    Raises:
        CheckpointError: the checkpoint belongs to a run of another length or structure (the
            message names the first differing leaf).

    Example:
        >>> import tempfile, jax.numpy as jnp, optax
        >>> from subnets import checkpoint
        >>> tx = optax.adam(1e-3)
        >>> params = {"w": jnp.ones(3)}
        >>> s = tx.init(params)
        >>> _, s = tx.update(params, s)
        >>> d = tempfile.mkdtemp() + "/ck"
        >>> checkpoint.save_state(d, s, epoch=1, epochs=3)
        >>> back, done = checkpoint.restore_state(d, tx.init(params), epochs=3)
        >>> type(back[0]).__name__, int(back[0].count), done
        ('ScaleByAdamState', 1, 1)
    """
    tree, meta = restore(directory)
    if meta.get("epochs") != epochs:
        raise CheckpointError(f"{directory}: saved by a run of {meta.get('epochs')} epochs, this "
                              f"one has {epochs}")
    keys = sorted(tree)
    want = jax.tree.leaves(template)
    try:
        if isinstance(meta.get("leaves"), list):
            _checkpoint_tree.check_described(meta["leaves"], template, str(directory))
        if len(keys) != len(want) or any(np.shape(tree[k]) != np.shape(b)
                                         for k, b in zip(keys, want, strict=False)):
            raise ValueError(f"{directory}: holds a training state of another structure "
                             "(different model or optimiser)")
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    state = jax.tree.unflatten(jax.tree.structure(template),
                               [_checkpoint_tree.cast(tree[k], b)
                                for k, b in zip(keys, want, strict=True)])
    return state, int(meta["epoch"])
