"""Where the C runtimes live: ``kernels/mcu`` (installed as ``subnets.kernels/mcu``).

Example:
    >>> from subnets.export.kernels_dir import mcu_dir
    >>> (mcu_dir() / "snq.h").is_file()
    True

References:
    Python's ``importlib.resources`` (package data).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def mcu_dir() -> Path:
    """The folder holding ``snq``/``snf`` (.h, .c) and the firmware, installed or in the tree.

    Raises:
        FileNotFoundError: neither the installed package data nor the source tree has it.
    """
    try:
        found = Path(str(importlib.resources.files("subnets.kernels") / "mcu"))
        if (found / "snq.h").is_file():
            return found
    except (ModuleNotFoundError, TypeError):
        pass
    repo = Path(__file__).resolve().parents[2] / "kernels" / "mcu"
    if (repo / "snq.h").is_file():
        return repo
    raise FileNotFoundError("the C runtime kernels/mcu (snq.h) is neither installed as "
                            f"subnets.kernels/mcu nor at {repo}")
