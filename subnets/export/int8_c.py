"""Write the int8 nested C artifact: shared int8 weights, per-level tables, a static arena.

Files: ``<name>.h`` (sizes, the input/output quantisation, a per-level cost table, entry points
``<name>_set_level``, ``<name>_level``, ``<name>_run``, ``<name>_select`` and the alias
``subnets_select``), ``<name>.c`` (data), the runtime ``snq.h`` / ``snq.c`` from ``kernels/mcu``
and ``manifest.json``.

Example:
    >>> from subnets.export.int8_c import plan_arena
    >>> plan_arena([(0, 1, 100), (1, 2, 50), (2, 3, 100)])  # the first and last never meet
    ([0, 100, 0], 152)

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.1 and 5; David et al., TensorFlow Lite Micro
    (MLSys 2021) (arena planning).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from subnets.export.int8 import add_params

_KIND = {"conv": "SNQ_CONV", "depthwise": "SNQ_DEPTHWISE", "avgpool": "SNQ_AVGPOOL",
         "maxpool": "SNQ_MAXPOOL", "add": "SNQ_ADD"}
_PER_LINE = 16


def plan_arena(lives: list[tuple[int, int, int]]) -> tuple[list[int], int]:
    """First-fit offsets for ``(first_step, last_step, bytes)`` buffers (4-aligned), largest
    first, so buffers alive at the same step never overlap. Returns (offsets, arena bytes)."""
    order = sorted(range(len(lives)), key=lambda i: (-lives[i][2], i))
    placed: list[tuple[int, int, int, int]] = []  # start, end, first, last
    offsets = [0] * len(lives)
    for i in order:
        first, last, size = lives[i]
        size = (size + 3) // 4 * 4
        busy = sorted((s, e) for s, e, f, la in placed if not (la < first or f > last))
        at = 0
        for s, e in busy:
            if at + size <= s:
                break
            at = max(at, e)
        offsets[i] = at
        placed.append((at, at + size, first, last))
    return offsets, max((e for _, e, _, _ in placed), default=0)


def value_lives(steps: list, widths: dict) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Each step's output buffer: (first, last) step alive and bytes at ``widths``."""
    last = {s.dst: i for i, s in enumerate(steps)}
    for i, s in enumerate(steps):
        for v in (s.src, s.src2):
            if v in last:
                last[v] = max(last[v], i)
    ids, lives = [], []
    for i, s in enumerate(steps):
        ids.append(s.dst)
        n = s.out_hw[0] * s.out_hw[1] * widths[s.out_group]
        lives.append((i, max(last[s.dst], i), n))
    return ids, lives


def arena_bytes(steps: list, widths: dict) -> int:
    """Activation arena plus im2col scratch (int16) at ``widths``."""
    _, lives = value_lives(steps, widths)
    return plan_arena(lives)[1] + 2 * scratch_elems(steps, widths)


def scratch_elems(steps: list, widths: dict) -> int:
    n = max([s.window[0] * s.window[1] * widths[s.in_group] for s in steps if s.kind == "conv"]
            or [1])
    return 2 * (n + (n & 1))  # two im2col columns (the 2x2 DSP kernel)


def macs(steps: list, widths: dict) -> int:
    total = 0
    for s in steps:
        pos = s.out_hw[0] * s.out_hw[1] * s.window[0] * s.window[1]
        if s.kind == "conv":
            total += pos * widths[s.in_group] * widths[s.out_group]
        elif s.kind == "depthwise":
            total += pos * widths[s.out_group]
    return int(total)


def _ints(ctype: str, name: str, values: Any) -> str:
    flat = [int(v) for v in np.asarray(values).ravel()]
    body = ",\n".join("  " + ", ".join(str(v) for v in flat[i:i + _PER_LINE])
                      for i in range(0, len(flat), _PER_LINE)) or "  0"
    return f"static const {ctype} {name}[{max(len(flat), 1)}] = {{\n{body}\n}};\n"


def tables(steps: list) -> tuple[list[str], list[list[str]], int]:
    """C arrays of the per-level requantisation tables, a level's table shared where it is a
    prefix of a wider level's; ``refs[level][step]`` initialisers and the bytes stored."""
    nl = len(next(s for s in steps if "levels" in s.q).q["levels"])
    arrays, refs, stored = [], [["{NULL, NULL, NULL}"] * len(steps) for _ in range(nl)], 0
    for j, s in enumerate(steps):
        if "levels" not in s.q:
            continue
        kept: list[tuple[str, dict]] = []
        for i in reversed(range(nl)):
            t = s.q["levels"][i]
            c = len(t["mult"])
            ident = next((k for k, t0 in kept if all(np.array_equal(t0[f][:c], t[f])
                                                     for f in ("mult", "shift", "bias32"))), None)
            if ident is None:
                ident = f"{j}_l{i}"
                kept.append((ident, t))
                arrays += [_ints("int32_t", f"m{ident}", t["mult"]),
                           _ints("int8_t", f"s{ident}", t["shift"]),
                           _ints("int32_t", f"b{ident}", t["bias32"])]
                stored += 9 * c
            refs[i][j] = f"{{m{ident}, s{ident}, b{ident}}}"
    return arrays, refs, stored


def layer_init(s: Any, offset: dict, full: dict, col: dict, j: int) -> str:
    src = offset.get(s.src, -1)
    src2 = offset.get(s.src2, -1) if s.kind == "add" else -1
    in_zp = s.q["in"][1]
    in2_zp = s.q["in2"][1] if s.kind == "add" else 0
    p = {"in1_mult": 0, "in1_shift": 0, "in2_mult": 0, "in2_shift": 0, "out_mult": 0,
         "out_shift": 0}
    if s.kind == "add":
        p = add_params(s.q["in"][0], s.q["in2"][0], s.q["out"][0])
    weight = f"w{j}" if "weights" in s.q else "NULL"
    lo, hi = s.q["act"]
    return (f"  {{{_KIND[s.kind]}, {s.in_hw[0]}, {s.in_hw[1]}, {s.out_hw[0]}, {s.out_hw[1]}, "
            f"{s.window[0]}, {s.window[1]}, {s.stride[0]}, {s.stride[1]}, {s.pad[0][0]}, "
            f"{s.pad[1][0]}, {full[s.in_group]}, {weight}, {src}, {src2}, {offset[s.dst]}, "
            f"{col[s.in_group]}, {col[s.out_group]}, {in_zp}, {in2_zp}, {s.q['out'][1]}, {lo}, "
            f"{hi}, {p['in1_mult']}, {p['in1_shift']}, {p['in2_mult']}, {p['in2_shift']}, "
            f"{p['out_mult']}, {p['out_shift']}}},  /* {s.name} */")


def source(name: str, steps: list, widths: list[dict], groups: list[str], full: dict,
           level_rows: list[dict]) -> tuple[str, str, dict]:
    """(header text, source text, sizes) of the artifact."""
    col = {g: i for i, g in enumerate(groups)}
    ids, lives = value_lives(steps, full)
    offs, arena = plan_arena(lives)
    offset = dict(zip(ids, offs, strict=True))
    scratch = scratch_elems(steps, full)
    # conv rows [out][kh][kw][in_full]; depthwise tap-major [kh*kw][in_full] (4 channels a word)
    arrays = [_ints("int8_t", f"w{j}", s.q["weights"].T if s.kind == "depthwise"
                    else s.q["weights"]) for j, s in enumerate(steps) if "weights" in s.q]
    weight_bytes = sum(s.q["weights"].size for s in steps if "weights" in s.q)
    t_arrays, refs, table_bytes = tables(steps)
    n, nl = len(steps), len(widths)
    wrows = ",\n".join("  " + ", ".join(str(lv[g]) for g in groups) for lv in widths)
    trows = ",\n".join("  " + ", ".join(r) for r in refs)
    active = ",\n".join(f"  {{{full[s.in_group]}, {full[s.out_group]}, "
                        f"{refs[-1][j].strip('{}').replace(', ', ', ')}}}"
                        for j, s in enumerate(steps))
    out_n = steps[-1].out_hw[0] * steps[-1].out_hw[1] * full[steps[-1].out_group]
    src = "\n".join([
        f"/* {name}: generated by subnets.export.nested_c (int8). Do not edit.",
        " * Weights are stored once, output-unit-major; every level reads a prefix of each. */",
        f'#include "{name}.h"', '#include "snq.h"', "", "#include <stddef.h>", "",
        *arrays, *t_arrays,
        f"static const snq_layer layers[{n}] = {{",
        *[layer_init(s, offset, full, col, j) for j, s in enumerate(steps)], "};", "",
        f"static const int32_t widths[{nl * len(groups)}] = {{  /* {', '.join(groups)} */",
        wrows, "};", f"static const snq_tables tables[{nl * n}] = {{", trows, "};",
        f"static snq_active active[{n}] = {{  /* the full level until set_level */", active,
        "};",
        f"static int8_t arena[{max(arena, 4)}];", f"static int16_t scratch[{scratch}];",
        "static const snq_model model = {",
        f"  {n}, {len(groups)}, {nl}, layers, widths, tables, active, arena, scratch", "};",
        f"static int current = {nl - 1};", "",
        f"const {name}_level_info {name}_levels[{nl}] = {{",
        *[f"  {{{r['macs']}UL, {r['weight_bytes']}UL, {r['arena_bytes']}UL, "
          f"{r.get('instructions') or 0}UL}}," for r in level_rows], "};", "",
        f"int {name}_set_level(int level) {{",
        "  if (snq_set_level(&model, level) != 0) return -1;", "  current = level;",
        "  return 0;", "}", "", f"int {name}_level(void) {{ return current; }}", "",
        f"void {name}_run(const int8_t *input, int8_t *output) {{",
        "  snq_run(&model, input, output);", "}", "",
        f"int {name}_select(unsigned long max_macs) {{",
        f"  for (int i = {nl - 1}; i >= 0; --i)",
        f"    if ({name}_levels[i].macs <= max_macs) return i;", "  return -1;", "}", ""])
    sizes = {"weight_bytes": int(weight_bytes), "table_bytes": int(table_bytes),
             "arena_bytes": int(arena + 2 * scratch), "output_size": int(out_n),
             "input_size": int(steps[0].in_hw[0] * steps[0].in_hw[1] * full[steps[0].in_group])}
    return _header(name, nl, sizes, steps), src, sizes


def _header(name: str, nl: int, sizes: dict, steps: list) -> str:
    up = name.upper()
    s_in, zp_in = steps[0].q["in"]
    s_out, zp_out = steps[-1].q["out"]
    return "\n".join([
        f"/* {name}: a nested int8 family of {nl} levels over shared weights, generated by",
        " * subnets.export.nested_c. Do not edit. Not reentrant: one active level per model.",
        " * Quantisation: TFLite-Micro's (real = scale * (q - zero_point)). */",
        f"#ifndef SUBNETS_{up}_H_", f"#define SUBNETS_{up}_H_", "", "#include <stdint.h>", "",
        f"#define {up}_NUM_LEVELS {nl}",
        f"#define {up}_INPUT_SIZE {sizes['input_size']}  /* int8, the example row-major */",
        f"#define {up}_OUTPUT_SIZE {sizes['output_size']}  /* int8 logits */",
        f"#define {up}_ARENA_BYTES {sizes['arena_bytes']}  /* static, full level */",
        f"#define {up}_INPUT_SCALE {s_in!r}f", f"#define {up}_INPUT_ZERO_POINT {zp_in}",
        f"#define {up}_OUTPUT_SCALE {s_out!r}f", f"#define {up}_OUTPUT_ZERO_POINT {zp_out}",
        "", "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
        "typedef struct {  /* per level; instructions: measured on Cortex-M4 (QEMU), 0 if not */",
        "  unsigned long macs, weight_bytes, arena_bytes, instructions;",
        f"}} {name}_level_info;",
        f"extern const {name}_level_info {name}_levels[{nl}];",
        "/* Activate level 0 (smallest) .. NUM_LEVELS - 1 (full, the initial one): writes each",
        " * layer's widths and table pointers, moves no weight. 0, or -1 if out of range. */",
        f"int {name}_set_level(int level);", f"int {name}_level(void);",
        f"void {name}_run(const int8_t *input, int8_t *output);",
        "/* The largest level whose MACs fit max_macs, or -1 if none does. */",
        f"int {name}_select(unsigned long max_macs);",
        "#ifndef SUBNETS_NO_SELECT_ALIAS", f"#define subnets_select {name}_select", "#endif",
        "", "#ifdef __cplusplus", "}", "#endif", "", f"#endif  /* SUBNETS_{up}_H_ */", ""])
