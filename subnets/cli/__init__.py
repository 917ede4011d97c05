"""The ``subnets`` command line: one subcommand per module in this package.

Each ``subnets.cli.<command>`` module defines ``add_parser(subparsers)`` and ``run(args) -> int``.
Flags exist only here and in benchmark entry points; library code takes frozen configs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("demo", "info", "nest", "subspace", "prune", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="subnets",
        description="Turn one trained network into a family of subnetworks that switch at run "
                    "time (REDS, LCS, DNNShifter, Reconvene) and export them to microcontrollers.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"subnets.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"subnets.cli.{name}":
                continue  # a command not built into this installation
            raise
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def _version() -> str:
    from subnets import __version__

    return f"subnets {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        if getattr(args, "data", None) == "default":
            from subnets.data import announce

            args.data = announce(data_dir=getattr(args, "data_dir", None))
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"subnets {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
