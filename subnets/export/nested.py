"""``nested_c``: one int8 (default) or float32 C99 artifact for a nested family.

Both come from the graph's program (:func:`subnets.export.int8.lower`): int8 runs on the
``snq`` runtime of ``kernels/mcu``, float32 on its twin ``snf``.

Example:
    >>> from subnets.export.nested import nested_c
    >>> nested_c.__name__
    'nested_c'

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.1 and 5; David et al., TensorFlow Lite
    Micro (MLSys 2021).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from subnets.export import float_c, int8_c
from subnets.export import int8 as q8
from subnets.export.carray import _IDENT, write_sources
from subnets.export.carray import atomic_write_text as _atomic_write
from subnets.export.errors import ExportError
from subnets.export.kernels_dir import mcu_dir

FORMAT = "subnets.nested_c.int8"
FORMAT_VERSION = 1
RUNTIME_FILES = ("snq.h", "snq.c")


def prepare(family: Any, representative: Any) -> tuple[list, dict]:
    """Lower the family's program and quantise it: ``(steps, quantisation)``."""
    graph = family.net.graph
    try:
        rep = np.asarray(representative, np.float32)
    except (TypeError, ValueError) as e:
        raise ExportError(f"nested_c: representative must be an array, got "
                          f"{type(representative)}") from e
    shape = tuple(int(s) for s in graph.input_shape)
    if rep.ndim != len(shape) + 1 or tuple(rep.shape[1:]) != shape or rep.shape[0] < 1:
        raise ExportError(f"nested_c: representative has shape {rep.shape}; expected (N,) + "
                          f"the graph's input_shape {shape} with N >= 1")
    if not np.all(np.isfinite(rep)):
        raise ExportError("nested_c: representative contains NaN or infinite values")
    steps, _ = q8.lower(graph)
    return steps, q8.quantize(family, steps, rep)


def nested_c(family: Any, out_dir: str | os.PathLike, *, representative: Any = None,
             int8: bool = True, name: str = "subnets_model",
             instructions: Any = None) -> dict:
    """Write one C99 artifact holding every level of ``family`` over shared weights.

    Args:
        family: a :class:`subnets.runtime.family.Family` whose graph has a program.
        out_dir: destination folder (created if needed).
        representative: float inputs ``(N,) + input_shape`` calibrating the int8 ranges
            (required with ``int8``).
        int8: TFLite-Micro-exact int8 (default); ``False``: the float32 artifact.
        name: C identifier prefixing the files and the entry points.
        instructions: optional measured instructions per inference, one per level (e.g. from
            :func:`subnets.export.firmware.run`), written into the header's level table.

    Returns:
        The manifest (also ``manifest.json``): ``files``, ``weight_bytes``, ``table_bytes``,
        ``arena_bytes``, ``input`` / ``output`` quantisation and ``levels`` (``widths``,
        ``macs``, ``weight_bytes``, ``arena_bytes``). With ``int8=False``: ``weight_bytes``
        (float32 kernels and biases, stored once), ``affine_bytes`` (per-level norm affine),
        ``separate_bytes`` (one copy per level), ``arena_bytes``, ``layers`` (the lowered
        steps with their kernel / bias paths and norm id) and ``levels`` (``widths``,
        ``macs``); ``representative`` and ``instructions`` are not used.

    Raises:
        ExportError: no representative (int8), a bad name, or an op without a kernel.
    """
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise ExportError(f"nested_c: name {name!r} is not a C identifier")
    if not int8:
        return float_c.write(family, out_dir, name)
    if representative is None:
        raise ExportError("nested_c: int8 needs representative=(N,)+input_shape float inputs "
                          "from the training data (or int8=False for the float artifact)")
    steps, qz = prepare(family, representative)
    if instructions is not None and len(instructions) != len(qz["widths"]):
        raise ExportError(f"nested_c: instructions has {len(instructions)} entries for "
                          f"{len(qz['widths'])} levels")
    graph = family.net.graph
    groups = [g.name for g in graph.groups]
    full = {g.name: int(g.size) for g in graph.groups}
    rows = []
    for lv in qz["widths"]:
        wb = sum(s.q["weights"][:lv[s.out_group]].size * lv[s.in_group] // full[s.in_group]
                 if s.kind == "conv" else
                 s.q["weights"][:lv[s.out_group]].size
                 for s in steps if "weights" in s.q)
        tb = sum(9 * lv[s.out_group] for s in steps if "weights" in s.q)
        rows.append({"widths": {g.name: lv[g.name] for g in graph.free},
                     "macs": int_c_macs(steps, lv), "weight_bytes": int(wb + tb),
                     "arena_bytes": int(int8_c.arena_bytes(steps, lv)),
                     "instructions": int(instructions[len(rows)]) if instructions is not None
                     else None})
    header, source, sizes = int8_c.source(name, steps, qz["widths"], groups, full, rows)
    out, files = write_sources(out_dir, name, header, source,
                               [mcu_dir() / f for f in RUNTIME_FILES])
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "name": name,
        "input_shape": [int(s) for s in graph.input_shape],
        "files": files,
        **sizes,
        # TFLite's quantisation fields (real = scale * (q - zero_point))
        "input": dict(scale=steps[0].q["in"][0], zero_point=steps[0].q["in"][1]),
        "output": dict(scale=steps[-1].q["out"][0], zero_point=steps[-1].q["out"][1]),
        "activation_ranges": "union over levels (one scale per tensor)",
        "steps": [{"name": s.name, "kind": s.kind, "act": s.act} for s in steps],
        "levels": rows,
    }
    _atomic_write(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def int_c_macs(steps: list, widths: dict) -> int:
    """MACs of the int8 program at ``widths``."""
    return int8_c.macs(steps, widths)
