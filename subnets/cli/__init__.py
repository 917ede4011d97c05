"""The ``subnets`` command line: one subcommand per module in this package.

Each ``subnets.cli.<command>`` module defines ``add_parser(subparsers)`` and ``run(args) -> int``.
Flags exist only here and in benchmark entry points; library code takes frozen configs.

Errors end with ONE line on stderr, ``subnets <command>: error: <path>: <cause>``, and a
non-zero exit (2 for bad input and damaged files, 1 for other failures); ``--debug`` (or
``SUBNETS_DEBUG=1``) prints the traceback too. Ctrl-C ends with one line saying what was saved
and how to resume, exit 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import traceback

COMMANDS = ("demo", "info", "nest", "subspace", "prune", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="subnets",
        description="Turn one trained network into a family of subnetworks that switch at run "
                    "time (REDS, LCS, DNNShifter, Reconvene) and export them to microcontrollers.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"subnets.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"subnets.cli.{name}":
                continue  # a command not built into this installation
            raise
        p = module.add_parser(sub)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks of errors")
        p.set_defaults(_run=module.run)
    return parser


def _version() -> str:
    from subnets import __version__

    return f"subnets {__version__}"


def describe(e: BaseException) -> str:
    """One line for an exception: ``<path>: <cause>`` for OS errors, the first line otherwise."""
    if isinstance(e, OSError) and (e.filename is not None or e.strerror):
        path = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        cause = e.strerror or str(e)
        return f"{path}: {cause}" if path is not None else cause
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        text = e.args[0]
    else:
        text = str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else type(e).__name__
    if len(first) > 400:
        first = first[:400] + "..."
    if not isinstance(e, ValueError | KeyError | OSError | RuntimeError | FloatingPointError):
        first = f"{type(e).__name__}: {first} (run with --debug for the traceback)"
    return first


def _interrupted(command: str, argv: list[str]) -> str:
    from subnets import runs

    run = runs.active()
    line = "subnets " + " ".join(shlex.quote(a) for a in argv)
    if run is None:
        return f"subnets {command}: interrupted; nothing was saved"
    if run.manifest.get("status") == "running":
        try:
            run.finish("interrupted")
        except OSError:
            pass
    return (f"subnets {command}: interrupted; saved in {run.out}: {run.saved}; resume with: "
            f"{line}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    args._argv = argv
    debug = bool(getattr(args, "debug", False) or os.environ.get("SUBNETS_DEBUG"))
    try:
        if getattr(args, "data", None) == "default":
            from subnets.data import announce

            args.data = announce(data_dir=getattr(args, "data_dir", None), when="load")
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(_interrupted(args.command, argv), file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's one line per error
        if debug:
            traceback.print_exc()
        print(f"subnets {args.command}: error: {describe(e)}", file=sys.stderr)
        return 2 if isinstance(e, ValueError | KeyError | FileNotFoundError) else 1


def entry() -> None:
    """The console script: :func:`main`, then exit with its code.

    After a reported error or Ctrl-C it leaves without interpreter shutdown: orbax's background
    threads would otherwise print tracebacks ("Event loop is closed") after the one line.
    """
    rc = main()
    if rc:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    entry()
