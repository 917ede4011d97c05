"""The ``subnets`` command line: one subcommand per module in this package.

Each ``subnets.cli.<command>`` module defines ``add_parser(subparsers)`` and ``run(args) -> int``.
Flags exist only here and in benchmark entry points; library code takes frozen configs.

Errors end with ONE line on stderr, ``subnets <command>: error: <path>: <cause>``, and a
non-zero exit (2 for bad input and damaged files, 1 for other failures); ``--debug`` (or
``SUBNETS_DEBUG=1``) prints the traceback too. Ctrl-C ends with one line saying what was saved
and how to resume, exit 130. A missing optional package ends with one line naming the
``pip install 'subnets[<extra>]'`` that adds it (exit 2).

Every command takes ``--json`` (its result as ONE JSON object on stdout; logs, tables and progress
on stderr; on an error ``{"command", "error", "exit"}``), ``--config FILE`` (options from a TOML
or JSON file keyed by long flag names; the command line wins; see :mod:`subnets.cli._output`) and
shows its defaults in ``--help``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import sys
import traceback

from subnets.cli._output import add_common_flags, config_tokens, dumps, extra_for

COMMANDS = ("demo", "info", "nest", "subspace", "prune", "export")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``<prog>: error: <message>``, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="subnets",
        description="Turn one trained network into a family of subnetworks that switch at run "
                    "time (REDS, LCS, DNNShifter, Reconvene) and export them to microcontrollers.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser._commands = {}
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
        add_common_flags(p)
        p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
        for action in p._actions:
            if action.help is None:
                action.help = "default: %(default)s"
        p.set_defaults(_run=module.run)
        parser._commands[name] = p
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


def missing_extra(e: BaseException) -> str | None:
    """One line naming the ``pip install`` that adds a missing optional dependency, if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ImportError):
            extra = extra_for(e)
            if extra is not None:
                module = e.name.split(".")[0]
                return (f"the optional package {module!r} is not installed: "
                        f"pip install 'subnets[{extra}]' adds it")
        e = e.__cause__ or e.__context__
    return None


def _split(argv: list[str], parser) -> tuple[int, argparse.ArgumentParser | None]:
    """Index of the command in ``argv`` and its parser (``-1, None`` if there is none)."""
    for i, a in enumerate(argv):
        if a in parser._commands:
            return i, parser._commands[a]
        if not a.startswith("-"):
            break
    return -1, None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    i, sub = _split(argv, parser)
    full = argv
    if sub is not None:
        try:
            full = argv[:i + 1] + config_tokens(sub, argv[i + 1:]) + argv[i + 1:]
        except (ValueError, OSError) as e:
            print(f"{sub.prog}: error: {describe(e)}", file=sys.stderr)
            return 2
    args = parser.parse_args(full)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    args._argv = argv
    debug = bool(getattr(args, "debug", False) or os.environ.get("SUBNETS_DEBUG"))
    as_json = bool(getattr(args, "json", False))
    with _stdout_to_stderr(as_json):
        rc, error = _execute(args, argv, debug)
    if as_json:
        out = ({"command": args.command, "error": error, "exit": rc} if error is not None
               else getattr(args, "_result", None) or {"command": args.command, "exit": rc})
        print(dumps(out))
        sys.stdout.flush()
    return rc


def _execute(args, argv: list[str], debug: bool) -> tuple[int, str | None]:
    """Run the command: its exit code, and the one-line error it ended with (or None)."""
    try:
        if getattr(args, "data", None) == "default":
            from subnets.data import announce

            args.data = announce(data_dir=getattr(args, "data_dir", None), when="load")
        return int(args._run(args) or 0), None
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        line = _interrupted(args.command, argv)
        print(line, file=sys.stderr)
        return 130, line
    except Exception as e:  # noqa: BLE001 - the CLI's one line per error
        if debug:
            traceback.print_exc()
        extra = missing_extra(e)
        if extra is None and isinstance(e, ImportError) and "pip install" in str(e):
            extra = str(e).splitlines()[0]
        text = extra or describe(e)
        print(f"subnets {args.command}: error: {text}", file=sys.stderr)
        code = 2 if extra or isinstance(e, ValueError | KeyError | FileNotFoundError) else 1
        return code, text


@contextlib.contextmanager
def _stdout_to_stderr(on: bool):
    """Under ``--json`` everything a command prints (even from subprocesses) goes to stderr."""
    if not on:
        yield
        return
    sys.stdout.flush()
    try:
        fd, err = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None  # a captured stdout (pytest's capsys): Python-level redirection only
    saved = os.dup(fd) if fd is not None else None
    if saved is not None:
        sys.stderr.flush()
        os.dup2(err, fd)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, fd)
            os.close(saved)


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
