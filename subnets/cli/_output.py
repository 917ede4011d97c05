"""Shared CLI conventions: ``--json`` results, ``--config`` files, one-line errors, extras.

With ``--json`` a command's human output goes to stderr and its result (the dict it passes to
:func:`result`) is printed as ONE JSON object on stdout when it ends. ``--config FILE`` reads
options from a TOML or JSON file whose keys are long flag names (``batch-size`` or
``batch_size``); flags given on the command line override it.

Example:
    >>> import argparse
    >>> args = argparse.Namespace(json=True)
    >>> result(args, {"out": "runs/x", "accuracy": float("nan")})
    >>> dumps(args._result)
    '{"out": "runs/x", "accuracy": null}'
    >>> extra_for(ModuleNotFoundError("no", name="matplotlib.pyplot"))
    'plot'

References:
    The argparse and tomllib documentation (docs.python.org).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

# Top-level module name of an optional dependency -> the extra of pyproject.toml that adds it.
EXTRAS = {"tensorflow": "export", "tflite_micro": "export", "tflite_runtime": "export",
          "tensorflow_datasets": "data", "mlxtend": "data", "sklearn": "data",
          "matplotlib": "plot"}


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """``--json`` (unless the command has it) and ``--config FILE`` on one subcommand parser."""
    if "--json" not in p._option_string_actions:
        p.add_argument("--json", action="store_true",
                       help="print one JSON object (the command's result) on stdout; every "
                            "log and progress line goes to stderr")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="read options from a TOML or JSON file whose keys are the long flag "
                        "names (batch-size or batch_size); flags on the command line win")


def result(args: argparse.Namespace, obj: dict[str, Any]) -> None:
    """Record the command's result: printed as one JSON object on stdout under ``--json``."""
    args._result = obj


def jsonable(obj: Any) -> Any:
    """``obj`` with paths, tuples and NumPy values made JSON-ready, non-finite floats None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):  # NumPy / JAX scalars and arrays
        return jsonable(obj.tolist())
    return str(obj)


def dumps(obj: dict[str, Any]) -> str:
    """One line of strict JSON."""
    return json.dumps(jsonable(obj), allow_nan=False)


def extra_for(e: ImportError) -> str | None:
    """The extra (``export``, ``data``, ``plot``) whose install adds the missing module."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    return EXTRAS.get(name)


def _config_file(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--":
            return None
        if a == "--config":
            if i + 1 >= len(argv):
                return None  # argparse reports the missing value
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def read_config(path: str) -> dict[str, Any]:
    """The options of a TOML (``.toml``) or JSON file; ValueError naming the file if bad."""
    p = Path(path)
    data = p.read_bytes()  # FileNotFoundError names the file
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            cfg = tomllib.loads(data.decode("utf-8"))
        else:
            cfg = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        kind = "TOML" if p.suffix.lower() == ".toml" else "JSON"
        raise ValueError(f"--config {path}: not a valid {kind} file ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"--config {path}: the file must hold one table/object of options")
    return cfg


def config_tokens(p: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Command-line tokens for the options of ``--config FILE`` in ``argv`` (none without it).

    They go before the user's own tokens, so a flag given on the command line overrides the file.
    Every key and value is checked here, with errors naming the key and the file.
    """
    path = _config_file(argv)
    if path is None:
        return []
    tokens: list[str] = []
    for key, value in read_config(path).items():
        flag = "--" + str(key).replace("_", "-")
        action = p._option_string_actions.get(flag)
        if action is None and any(a.dest == str(key) and not a.option_strings
                                  for a in p._actions):
            raise ValueError(f"--config {path}: {key!r} is a positional argument of "
                             f"`{p.prog}`: give it on the command line")
        if action is None or flag in ("--config", "--help"):
            raise ValueError(f"--config {path}: unknown option {key!r} for "
                             f"`{p.prog}` (see {p.prog} --help)")
        where = f"--config {path}: {key!r}"
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            if not isinstance(value, bool):
                raise ValueError(f"{where} is a switch: give true or false, got {value!r}")
            if value == isinstance(action, argparse._StoreTrueAction):
                tokens.append(flag)
            continue
        if isinstance(value, bool) or isinstance(value, dict) or value is None:
            raise ValueError(f"{where}: expected a value for {flag}, got {value!r}")
        text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        try:
            checked = action.type(text) if callable(action.type) else text
        except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: invalid value {value!r} ({e})") from None
        if action.choices is not None and checked not in action.choices:
            raise ValueError(f"{where}: invalid choice {value!r} (choose from "
                             f"{', '.join(map(str, action.choices))})")
        tokens += [flag, text]
    return tokens
