"""Export every level of a family: int8 ``.tflite`` + C arrays + ``manifest.json`` + board check.

Each level is physically sliced (``family.level_variables(i)``), so each exported model holds only
its own weights and needs only its own arena: both shrink with the level. The manifest records,
per level, MACs and parameters (from the channel graph), flash bytes (the flatbuffer), the arena
measured in the TFLite-Micro interpreter, and, given evaluation data, the TFLM int8 accuracy next
to the JAX float accuracy and their top-1 agreement. Every level is checked against a board's
flash and RAM; a level that does not fit says by how many bytes.

Example:
    >>> import jax, numpy as np, subnets
    >>> from subnets.export import export_family
    >>> class Fam:  # anything with net, variables, levels, level_variables(i)
    ...     net = subnets.zoo.create("dnn-s", num_classes=4, input_shape=(8,))
    ...     variables = net.init(jax.random.key(0))
    ...     levels = [{"h0": 8, "h1": 8, "h2": 8}, net.graph.full_widths()]
    ...     def level_variables(self, i):
    ...         return subnets.slice_widths(self.net.graph, self.variables, self.levels[i])
    >>> x = np.random.default_rng(0).random((32, 8), dtype=np.float32)
    >>> import tempfile; out = tempfile.mkdtemp()
    >>> m = export_family(Fam(), out, representative=x, eval_data=(x, np.zeros(32, int)),
    ...                   progress=False)
    >>> m["levels"][0]["flash_bytes"] < m["levels"][1]["flash_bytes"], m["fits"]
    (True, True)

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 5 (Arduino Nano 33 BLE Sense and Raspberry Pi
    Pico deployment).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from subnets.export.carray import write_c_array
from subnets.export.convert import tflite
from subnets.export.tflm import measure_arena, model_ops, tflm_run
from subnets.io import write_json
from subnets.models.protocol import describe

KIB = 1024


@dataclass(frozen=True)
class Board:
    """A microcontroller's budgets for one model: flash for the flatbuffer, RAM for the arena."""

    name: str
    flash_bytes: int
    ram_bytes: int

    def __post_init__(self) -> None:
        for field in ("flash_bytes", "ram_bytes"):
            if int(getattr(self, field)) <= 0:
                raise ValueError(f"board {self.name!r}: {field} must be positive, "
                                 f"got {getattr(self, field)}")

    def problems(self, flash: int, ram: int, what: str = "model") -> list[str]:
        """Why ``flash`` bytes of model and ``ram`` bytes of arena do not fit (empty: they do)."""
        out = []
        if flash > self.flash_bytes:
            out.append(f"{what}: flash {flash:,} B exceeds {self.name}'s {self.flash_bytes:,} B "
                       f"by {flash - self.flash_bytes:,} B")
        if ram > self.ram_bytes:
            out.append(f"{what}: arena {ram:,} B exceeds {self.name}'s RAM {self.ram_bytes:,} B "
                       f"by {ram - self.ram_bytes:,} B")
        return out


BOARDS: dict[str, Board] = {
    # Arduino Nano 33 BLE Sense: nRF52840, Cortex-M4F.
    "nano33ble": Board("nano33ble", 1024 * KIB, 256 * KIB),
    # Raspberry Pi Pico: RP2040, Cortex-M0+, 2 MB QSPI flash.
    "pico": Board("pico", 2048 * KIB, 264 * KIB),
}


def get_board(board: str | Board) -> Board:
    """A :class:`Board` from itself or a name in :data:`BOARDS`."""
    if isinstance(board, Board):
        return board
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; known boards: {', '.join(BOARDS)} "
                         "(or pass Board(name, flash_bytes, ram_bytes) for custom numbers)")
    return BOARDS[board]


def uniform_levels(graph: Any, fractions: Sequence[float]) -> list[dict[str, int]]:
    """Width levels keeping ``fraction`` of every free group (at least 1 channel), sorted."""
    fractions = sorted(float(f) for f in fractions)
    if not fractions or fractions[0] <= 0 or fractions[-1] > 1:
        raise ValueError(f"width fractions must lie in (0, 1], got {fractions}")
    return [{g.name: max(1, round(g.size * f)) for g in graph.free} for f in fractions]


@dataclass(frozen=True)
class SlicedLevels:
    """The minimal family :func:`export_family` needs, for any trained variables.

    ``level_variables(i)`` slices ``variables`` to ``levels[i]``; a REDS/LCS family (with its
    own per-level statistics) is exported the same way through the same four attributes.
    """

    net: Any
    variables: Mapping
    levels: tuple

    def level_variables(self, i: int) -> dict:
        from subnets.transforms import slice_widths

        return slice_widths(self.net.graph, self.variables, self.levels[i])


def _float_logits(net: Any, variables: Mapping, x: np.ndarray) -> np.ndarray:
    from subnets.train import predict

    return predict(net, variables, x, batch_size=min(len(x), 250))


def evaluate_model(net: Any, variables: Mapping, model: bytes, x: np.ndarray, y: np.ndarray, *,
                   arena_size: int | None = None) -> dict:
    """TFLM accuracy of ``model`` vs JAX float accuracy of ``variables`` on ``(x, y)``."""
    x, y = np.asarray(x, np.float32), np.asarray(y).reshape(-1)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"eval_data: {len(x)} inputs and {len(y)} labels; need equal, non-zero")
    ref = _float_logits(net, variables, x).argmax(-1)
    got = tflm_run(model, x, arena_size=arena_size).argmax(-1)
    acc_float, acc_tflm = float(np.mean(ref == y)), float(np.mean(got == y))
    return {"samples": int(len(x)), "jax_float_accuracy": acc_float,
            "tflm_accuracy": acc_tflm, "accuracy_drop": acc_float - acc_tflm,
            "top1_agreement": float(np.mean(ref == got))}


def export_family(family: Any, out_dir: str | os.PathLike, *, representative: Any,
                  board: str | Board = "nano33ble", eval_data: tuple[Any, Any] | None = None,
                  int8: bool = True, prefix: str = "level", progress: bool | None = None) -> dict:
    """Write one model per level of ``family`` into ``out_dir`` with a ``manifest.json``.

    Args:
        family: has ``net``, ``levels`` (widths dicts, smallest first) and
            ``level_variables(i)`` (physically sliced variables of level ``i``).
        out_dir: created if missing; gets ``{prefix}{i}.tflite``, ``{prefix}{i}.h/.cc`` and
            ``manifest.json``.
        representative: float training inputs ``(N,) + input_shape`` for int8 calibration.
        board: a name in :data:`BOARDS` or a :class:`Board` with custom numbers.
        eval_data: optional ``(x, y)``; adds TFLM vs JAX accuracy and agreement per level.
        int8: full-integer models (``False``: float32).
        prefix: file and C array names (a C identifier).
        progress: tqdm bar over levels (default: when stderr is a terminal).

    Returns:
        The manifest dict. ``manifest["fits"]`` is whether every level fits the board alone;
        ``manifest["problems"]`` says which does not, and by how much.
    """
    from tqdm.auto import tqdm

    net, board = family.net, get_board(board)
    levels = list(family.levels)
    if not levels:
        raise ValueError("family has no levels to export")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = sys.stderr.isatty()
    entries, problems = [], []
    for i in tqdm(range(len(levels)), desc="export", disable=not progress):
        entry = _export_level(family, i, out, prefix, representative, int8, eval_data)
        entry["problems"] = board.problems(entry["flash_bytes"], entry["arena_bytes"],
                                           f"level {i}")
        entry["fits"] = not entry["problems"]
        problems += entry["problems"]
        entries.append(entry)
    total_flash = sum(e["flash_bytes"] for e in entries)
    max_arena = max(e["arena_bytes"] for e in entries)
    manifest = {
        **describe(net),
        "int8": bool(int8),
        "board": asdict(board),
        "levels": entries,
        "fits": not problems,
        "problems": problems,
        # Storing every level separately (a portfolio) needs the sum of flashes; one arena of
        # the largest level serves them all when only one runs at a time.
        "all_levels_flash_bytes": total_flash,
        "max_arena_bytes": max_arena,
        "all_levels_problems": board.problems(total_flash, max_arena, "all levels together"),
    }
    write_json(out / "manifest.json", manifest, nonfinite="null", indent=2)
    return manifest


def _export_level(family: Any, i: int, out: Path, prefix: str, representative: Any,
                  int8: bool, eval_data: tuple[Any, Any] | None) -> dict:
    from subnets import cost

    net, widths = family.net, {k: int(v) for k, v in dict(family.levels[i]).items()}
    variables = family.level_variables(i)
    t0 = time.perf_counter()
    model = tflite(net, variables, representative=representative, int8=int8)
    seconds = time.perf_counter() - t0
    name = f"{prefix}{i}"
    (out / f"{name}.tflite").write_bytes(model)
    h, cc = write_c_array(model, out, name)
    arena = measure_arena(model)
    entry = {
        "level": i,
        "widths": widths,
        "macs": int(cost.macs(net, widths)),
        "params": int(cost.params(net, widths)),
        "flash_bytes": len(model),
        "arena_bytes": int(arena),
        "ops": model_ops(model),
        "convert_seconds": round(seconds, 3),
        "tflite": f"{name}.tflite",
        "c_header": h.name,
        "c_source": cc.name,
    }
    if eval_data is not None:
        entry["eval"] = evaluate_model(net, variables, model, *eval_data, arena_size=arena)
    return entry
