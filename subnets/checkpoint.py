"""Checkpoints of variables (and any pytree of arrays) through orbax, plus JSON metadata.

A checkpoint is a folder: ``DIR/state`` (orbax PyTree checkpoint) and ``DIR/meta.json``.
Orbax writes atomically (a temporary folder renamed when complete), so a crash never leaves a
half-written ``state``; ``meta.json`` is written after it, through a rename too.

Example:
    >>> import tempfile, numpy as np
    >>> from subnets import checkpoint
    >>> d = tempfile.mkdtemp()
    >>> checkpoint.save(d + "/ck", {"params": {"w": np.ones(3, np.float32)}}, meta={"step": 7})
    >>> tree, meta = checkpoint.restore(d + "/ck")
    >>> meta["step"], tree["params"]["w"].tolist()
    (7, [1.0, 1.0, 1.0])

References:
    orbax-checkpoint documentation (PyTreeCheckpointer).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np


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


def exists(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a complete checkpoint."""
    d = Path(directory)
    return (d / "state").is_dir() and (d / "meta.json").is_file()


def save(directory: str | os.PathLike, tree: Any, *, meta: dict | None = None,
         overwrite: bool = True) -> None:
    """Save a pytree of arrays and JSON-serialisable ``meta`` into ``directory``."""
    d = Path(directory).absolute()
    d.mkdir(parents=True, exist_ok=True)
    state = d / "state"
    if state.exists():
        if not overwrite:
            raise FileExistsError(f"checkpoint {state} exists and overwrite=False")
        shutil.rmtree(state)
    tree = jax.tree.map(np.asarray, tree)
    _checkpointer().save(str(state), tree)
    tmp = d / "meta.json.tmp"
    tmp.write_text(json.dumps(meta or {}, indent=1, sort_keys=True))
    os.replace(tmp, d / "meta.json")


def restore(directory: str | os.PathLike) -> tuple[Any, dict]:
    """Load ``(tree, meta)`` saved by :func:`save`; arrays come back as numpy."""
    d = Path(directory).absolute()
    if not exists(d):
        raise FileNotFoundError(f"no complete checkpoint in {d} (need state/ and meta.json)")
    try:
        meta = json.loads((d / "meta.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint metadata {d / 'meta.json'} is corrupt: {e}") from None
    tree = _checkpointer().restore(str(d / "state"))
    return jax.tree.map(np.asarray, tree), meta
