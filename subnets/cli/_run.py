"""Shared run-folder flags of the long commands: ``--force`` and ``--resume``."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="start afresh even if OUT holds a run of other settings; the old "
                        "folder is moved aside to OUT.old-<timestamp>, never deleted")
    p.add_argument("--resume", action="store_true",
                   help="require an earlier run in OUT to resume (a rerun with the same "
                        "settings resumes anyway)")


IGNORED = frozenset({"quiet", "json", "debug", "force", "resume", "no_resume", "_run",
                     "command", "out", "data_dir"})


def config_of(args: argparse.Namespace) -> dict[str, Any]:
    """The run's configuration: every flag but the presentational ones, JSON-ready."""
    cfg = {}
    for k, v in sorted(vars(args).items()):
        if k in IGNORED or k.startswith("_") or callable(v):
            continue
        cfg[k] = list(v) if isinstance(v, tuple) else v
    return cfg


def open_run(args: argparse.Namespace, command: str, *, identity=None, force: bool = False):
    from subnets import runs

    cfg = config_of(args)
    run = runs.start(args.out, command, cfg, identity=identity, seed=cfg.get("seed"),
                     force=force or args.force, require_resume=args.resume,
                     argv=["subnets", *getattr(args, "_argv", sys.argv[1:])])
    if run.moved_to is not None and not getattr(args, "quiet", False):
        print(f"subnets {command}: moved the old run aside to {run.moved_to}", file=sys.stderr)
    elif run.resumed and not getattr(args, "quiet", False):
        print(f"subnets {command}: resuming the run in {run.out}", file=sys.stderr)
    return run
