"""The float32 nested C artifact, from the same lowered program as the int8 one.

:func:`subnets.export.int8.lower` turns ``graph.program`` into steps (conv/dense, depthwise,
pools, residual add, per-channel affine); this module writes them for the float runtime
``snf.h`` / ``snf.c`` of ``kernels/mcu``. Each layer's weights and bias are stored ONCE at full
width, output-unit-major, so every level reads a prefix; a norm that follows a layer stays a
per-level per-channel affine (``scale``, ``shift``) from that level's own statistics, shared
where one level's is a prefix of another's.

Example:
    >>> import tempfile, jax, subnets
    >>> from subnets.runtime.family import Family
    >>> from subnets.export import nested_c
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> fam = Family(net, net.init(jax.random.key(0)),
    ...              [{"h0": 16, "h1": 16, "h2": 16}, net.graph.full_widths()])
    >>> info = nested_c(fam, tempfile.mkdtemp(), name="kws", int8=False)
    >>> info["files"]
    ['kws.c', 'kws.h', 'manifest.json', 'snf.c', 'snf.h']
    >>> info["weight_bytes"] == 4 * sum(x.size for x in jax.tree.leaves(fam.variables))
    True
    >>> [lv["widths"]["h0"] for lv in info["levels"]]
    [16, 144]

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.1 (contiguous nested weights) and Sec. 5
    (one model in flash, switching by writing a few widths on a Cortex-M4F).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from subnets.export import int8 as q8
from subnets.export import int8_c
from subnets.export.carray import atomic_write_text as _atomic_write
from subnets.export.carray import write_sources
from subnets.export.errors import ExportError
from subnets.export.kernels_dir import mcu_dir
from subnets.graph import get_path

FORMAT = "subnets.nested_c"
FORMAT_VERSION = 2
RUNTIME_FILES = ("snf.h", "snf.c")
_KIND = {"conv": "SNF_CONV", "depthwise": "SNF_DEPTHWISE", "avgpool": "SNF_AVGPOOL",
         "maxpool": "SNF_MAXPOOL", "add": "SNF_ADD"}
_ACT = {None: "SNF_NONE", "relu": "SNF_RELU", "relu6": "SNF_RELU6"}
_PER_LINE = 8


def _floats(name: str, values: Any) -> str:
    flat = np.asarray(values, np.float32).ravel()
    if not np.all(np.isfinite(flat)):
        raise ExportError(f"nested_c: array {name} has non-finite values")
    # 9 significant digits: the C compiler rounds each literal back to the same float32.
    items = [f"{v:.8e}f" for v in flat.tolist()] or ["0.0f"]
    body = ",\n".join("  " + ", ".join(items[i:i + _PER_LINE])
                      for i in range(0, len(items), _PER_LINE))
    return f"static const float {name}[{len(items)}] = {{\n{body}\n}};\n"


def _affine(step: Any, variables: dict, c: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A level's per-channel ``y = x * scale + shift`` after the step's bias (None: no norm)."""
    if step.norm is None:
        return None
    return tuple(a.astype(np.float32) for a in q8.norm_affine(variables, step.norm, c))


def _flat_bytes(variables: dict, path: Any) -> int:
    return 4 * int(np.size(get_path(variables, path))) if path is not None else 0


def write(family: Any, out_dir: str | os.PathLike, name: str) -> dict:
    """Write ``<name>.h``, ``<name>.c``, the float runtime and ``manifest.json``."""
    graph = family.net.graph
    steps, _ = q8.lower(graph)
    groups = [g.name for g in graph.groups]
    col = {g: i for i, g in enumerate(groups)}
    full = {g.name: int(g.size) for g in graph.groups}
    widths = [{**full, **{k: int(v) for k, v in lv.items()}} for lv in family.levels]
    level_vars = [family.level_variables(i) for i in range(len(widths))]
    params = family.variables
    arrays: list[str] = []
    refs = [["{NULL, NULL}"] * len(steps) for _ in widths]
    weight_bytes = affine_bytes = separate = 0
    inits = []
    ids, lives = int8_c.value_lives(steps, full)
    offs, arena = int8_c.plan_arena(lives)
    offset = dict(zip(ids, offs, strict=True))
    for j, s in enumerate(steps):
        weight = bias = "NULL"
        if s.kernel is not None:
            rows = q8._rows(s, get_path(params, s.kernel), full[s.in_group])
            weight = f"w{j}"
            arrays.append(_floats(weight, rows))
            weight_bytes += 4 * rows.size
            separate += sum(_flat_bytes(lv, s.kernel) for lv in level_vars)
        if s.bias is not None:
            bias = f"b{j}"
            arrays.append(_floats(bias, np.asarray(get_path(params, s.bias)).reshape(-1)))
            weight_bytes += _flat_bytes(params, s.bias)
            separate += sum(_flat_bytes(lv, s.bias) for lv in level_vars)
        kept: list[tuple[str, np.ndarray, np.ndarray]] = []
        for i in reversed(range(len(widths))):  # the widest first, so the others reuse it
            aff = _affine(s, level_vars[i], widths[i][s.out_group])
            if aff is None:
                continue
            scale, shift = aff
            separate += 8 * scale.size
            ident = next((k for k, s0, t0 in kept if np.array_equal(s0[:scale.size], scale)
                          and np.array_equal(t0[:shift.size], shift)), None)
            if ident is None:
                ident = f"{j}_l{i}"
                kept.append((ident, scale, shift))
                arrays += [_floats(f"s{ident}", scale), _floats(f"t{ident}", shift)]
                affine_bytes += 8 * scale.size
            refs[i][j] = f"{{s{ident}, t{ident}}}"
        kind = "SNF_AFFINE" if s.affine else _KIND[s.kind]
        src2 = offset.get(s.src2, -1) if s.kind == "add" else 0
        inits.append(
            f"  {{{kind}, {s.in_hw[0]}, {s.in_hw[1]}, {s.out_hw[0]}, {s.out_hw[1]}, "
            f"{s.window[0]}, {s.window[1]}, {s.stride[0]}, {s.stride[1]}, {s.pad[0][0]}, "
            f"{s.pad[1][0]}, {full[s.in_group]}, {weight}, {bias}, {offset.get(s.src, -1)}, "
            f"{src2}, {offset[s.dst]}, {col[s.in_group]}, {col[s.out_group]}, {_ACT[s.act]}}},"
            f"  /* {s.name} */")
    rows = [{"widths": {g.name: lv[g.name] for g in graph.free},
             "macs": int8_c.macs(steps, lv)} for lv in widths]
    out_n = steps[-1].out_hw[0] * steps[-1].out_hw[1] * full[steps[-1].out_group]
    in_n = int(np.prod(graph.input_shape))
    nl, n = len(widths), len(steps)
    source = "\n".join([
        f"/* {name}: generated by subnets.export.nested_c (float32). Do not edit.",
        " * Weights are stored once, output-unit-major; every level reads a prefix of each. */",
        f'#include "{name}.h"', '#include "snf.h"', "", "#include <stddef.h>", "", *arrays,
        f"static const snf_layer layers[{n}] = {{", *inits, "};", "",
        f"static const int widths[{nl * len(groups)}] = {{  /* {', '.join(groups)} */",
        ",\n".join("  " + ", ".join(str(lv[g]) for g in groups) for lv in widths), "};",
        f"static const snf_affine affine[{nl * n}] = {{",
        ",\n".join("  " + ", ".join(r) for r in refs), "};",
        f"static snf_active active[{n}] = {{  /* the full level until set_level */",
        ",\n".join(f"  {{{full[s.in_group]}, {full[s.out_group]}, {refs[-1][j]}}}"
                   for j, s in enumerate(steps)), "};",
        f"static float arena[{max(arena, 1)}];", "",
        "static const snf_model model = {",
        f"  {n}, {len(groups)}, {nl}, layers, widths, affine, active, arena", "};",
        f"static int current = {nl - 1};", "", f"const int {name}_num_levels = {nl};", "",
        f"int {name}_set_level(int level) {{",
        "  if (snf_set_level(&model, level) != 0) return -1;", "  current = level;",
        "  return 0;", "}", "", f"int {name}_level(void) {{ return current; }}", "",
        f"void {name}_run(const float *input, float *output) {{",
        "  snf_run(&model, input, output);", "}", "",
        f"int {name}_select(unsigned long max_macs) {{",
        f"  static const unsigned long macs[{nl}] = {{"
        f"{', '.join(str(r['macs']) + 'UL' for r in rows)}}};",
        f"  for (int i = {nl - 1}; i >= 0; --i)", "    if (macs[i] <= max_macs) return i;",
        "  return -1;", "}", ""])
    up = name.upper()
    header = "\n".join([
        f"/* {name}: a nested float32 family of {nl} levels over shared weights, generated by",
        " * subnets.export.nested_c. Do not edit. Not reentrant: one active level per model.",
        f" * Level table columns (channel groups): {', '.join(groups)}. */",
        f"#ifndef SUBNETS_{up}_H_", f"#define SUBNETS_{up}_H_", "",
        f"#define {up}_NUM_LEVELS {nl}",
        f"#define {up}_INPUT_SIZE {in_n}   /* floats, the example's shape row-major */",
        f"#define {up}_OUTPUT_SIZE {out_n}  /* logits */",
        f"#define {up}_ARENA_BYTES {4 * arena}", "",
        "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
        f"extern const int {name}_num_levels;",
        "/* Activate level 0 (smallest) .. num_levels - 1 (full, the initial one): writes each",
        " * layer's widths, copies nothing. Returns 0, or -1 if out of range (level unchanged). */",
        f"int {name}_set_level(int level);", f"int {name}_level(void);",
        f"void {name}_run(const float *input, float *output);",
        "/* The largest level whose MACs fit max_macs, or -1 if none does. */",
        f"int {name}_select(unsigned long max_macs);", "",
        "#ifdef __cplusplus", "}", "#endif", "", f"#endif  /* SUBNETS_{up}_H_ */", ""])
    out, files = write_sources(out_dir, name, header, source,
                               [mcu_dir() / f for f in RUNTIME_FILES])
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "name": name,
        "input_shape": [int(v) for v in graph.input_shape], "input_size": in_n,
        "output_size": int(out_n),
        "files": files,
        "weight_bytes": int(weight_bytes), "affine_bytes": int(affine_bytes),
        "separate_bytes": int(separate), "arena_bytes": int(4 * arena), "groups": groups,
        "layers": [{"name": s.name, "kind": "affine" if s.affine else s.kind,
                    "in_group": s.in_group, "out_group": s.out_group,
                    "kernel_path": list(s.kernel) if s.kernel else None,
                    "bias_path": list(s.bias) if s.bias else None,
                    "norm": list(s.norm.id) if s.norm is not None else None, "act": s.act}
                   for s in steps],
        "levels": rows,
    }
    _atomic_write(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest
