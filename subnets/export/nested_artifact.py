"""One C99 artifact for a nested family: each weight stored once, a level switch in O(layers).

After the importance permutation every level of a REDS family is a prefix of every array. The
artifact keeps that property in flash: each layer's weights are written ONCE, output-unit-major
(row ``o`` = output unit ``o``'s weights for every input of the full network), so level ``i``
reads the first ``out_width`` rows, each up to ``in_width`` with the full-row stride.
``<name>_set_level(i)`` writes each layer's active widths and BatchNorm pointers and copies
nothing. BatchNorm is kept as a per-level per-channel affine (scale, shift) computed from that
level's own running statistics: folding it into the shared kernels would need one kernel copy
per level. Levels whose affine is a prefix of another level's share that array. The Hello-Edge
CNN's flatten + dense is written as what it is, a VALID conv whose kernel covers the whole map
(the dense kernel's rows are already (h, w, c) row-major), so it too reads channel prefixes.

Files written to ``out_dir``: ``<name>.h`` / ``<name>.c`` (weights, level table, entry points
``<name>_set_level``, ``<name>_level``, ``<name>_run``, ``<name>_num_levels``), the runtime
``subnets_rt.h`` / ``subnets_rt.c`` (a small interpreter: conv/dense, depthwise, average
pooling; static ping-pong arena sized for the full level; no malloc) and ``manifest.json``.

Example:
    >>> import tempfile, jax, subnets
    >>> from subnets.runtime.family import Family
    >>> from subnets.export.nested_artifact import nested_c_float as nested_c
    >>> net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,))
    >>> fam = Family(net, net.init(jax.random.key(0)),
    ...              [{"h0": 16, "h1": 16, "h2": 16}, net.graph.full_widths()])
    >>> info = nested_c(fam, tempfile.mkdtemp(), name="kws")
    >>> sorted(info["files"])
    ['kws.c', 'kws.h', 'manifest.json', 'subnets_rt.c', 'subnets_rt.h']
    >>> info["weight_bytes"] == 4 * sum(x.size for x in jax.tree.leaves(fam.variables))
    True
    >>> [lv["widths"]["h0"] for lv in info["levels"]]
    [16, 144]

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 3.1 (contiguous nested weights) and Sec. 5
    (one model in flash, switching by writing a few widths on a Cortex-M4F).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from subnets import cost
from subnets.export.carray import _IDENT
from subnets.graph import get_path
from subnets.io import write_json
from subnets.zoo.common import NORM_EPS

FORMAT = "subnets.nested_c"
FORMAT_VERSION = 1
RUNTIME_DIR = Path(__file__).parent / "c"  # float runtime
RUNTIME_FILES = ("subnets_rt.h", "subnets_rt.c")
SUPPORTED = "dnn-s/m/l, cnn-s/m/l, ds-cnn-s/m/l and vision-ds-cnn (norm 'batch' or 'none')"
# What stops the interpreter from running the other zoo models, named in the error.
_UNSUPPORTED_LAYER = {"PreResNet": "residual add", "VGG": "max pooling"}
_PER_LINE = 8


@dataclass(frozen=True)
class _Op:
    """One step of the C program."""

    name: str                 # the layer's key under variables["params"]
    kind: str                 # "dense", "conv", "flatten_dense", "depthwise" or "avgpool"
    in_group: str
    out_group: str
    in_hw: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)  # top, left
    norm: str | None = None
    relu: bool = False


def _valid(size: int, k: int, s: int) -> tuple[int, int]:
    """Output size and leading pad of VALID padding."""
    return (size - k) // s + 1, 0


def _same(size: int, k: int, s: int) -> tuple[int, int]:
    """Output size and leading pad of XLA's SAME padding (the smaller half goes first)."""
    out = -(-size // s)
    return out, max((out - 1) * s + k - size, 0) // 2


def _unsupported(net: Any, layer: str) -> ValueError:
    return ValueError(f"nested_c: model {net.name!r} is not supported: its {layer} has no C "
                      f"kernel; supported: {SUPPORTED}")


def _program(net: Any) -> list[_Op]:
    """The zoo model as a list of C ops; ValueError naming the model and the layer otherwise."""
    from subnets.zoo.kws import CNN, DNN, DSCNN

    module = net.build(net.graph.sizes)
    if not isinstance(module, DNN | CNN | DSCNN):
        kind = type(module).__name__
        raise _unsupported(net, _UNSUPPORTED_LAYER.get(kind, f"{kind} module"))
    if net.norm not in ("batch", "none"):
        raise _unsupported(net, f"{net.norm} norm (GroupNorm)")
    groups = {layer.path[1]: (layer.in_group, layer.out_group) for layer in net.graph.layers}
    bn = net.norm == "batch"
    if isinstance(module, DNN):
        n = len(module.cfg.hidden)
        return [_Op(f"dense{i}", "dense", *groups[f"dense{i}"],
                    norm=f"norm{i}" if bn and i < n else None, relu=i < n)
                for i in range(n + 1)]
    cfg = module.cfg
    hh, ww, _ = net.input_shape
    ops = []

    def conv(name, kind, kernel, stride, norm, pad=_same, relu=True):
        nonlocal hh, ww
        (oh, pt), (ow, pl) = pad(hh, kernel[0], stride[0]), pad(ww, kernel[1], stride[1])
        ops.append(_Op(name, kind, *groups[name], (hh, ww), (oh, ow), tuple(kernel),
                       tuple(stride), (pt, pl), norm if bn else None, relu))
        hh, ww = oh, ow

    if isinstance(module, CNN):
        for i in range(2):
            conv(f"conv{i}", "conv", cfg.kernel, cfg.strides[i], f"norm{i}", _valid)
        # flatten (H, W, C) + dense is exactly a VALID conv whose kernel covers the whole map:
        # the dense kernel's rows are (h, w, c) row-major, the layout of a conv kernel.
        conv("linear", "flatten_dense", (hh, ww), (1, 1), None, _valid, relu=False)
        ops.append(_Op("dense", "dense", *groups["dense"],
                       norm="norm_dense" if bn else None, relu=True))
        ops.append(_Op("classifier", "dense", *groups["classifier"]))
        return ops

    conv("stem", "conv", cfg.stem_kernel, cfg.stem_stride, "stem_norm")
    for i in range(cfg.blocks):
        conv(f"dw{i}", "depthwise", (3, 3), cfg.first_dw_stride if i == 0 else (1, 1),
             f"dw{i}_norm")
        conv(f"pw{i}", "conv", (1, 1), (1, 1), f"pw{i}_norm")
    last = f"g{cfg.blocks}"
    ops.append(_Op("pool", "avgpool", last, last, (hh, ww)))
    ops.append(_Op("classifier", "dense", *groups["classifier"]))
    return ops


def _rows(op: _Op, kernel: np.ndarray) -> np.ndarray:
    """The kernel output-unit-major: [out][kh][kw][in_full], or [c][kh*kw] for depthwise."""
    if op.kind == "dense":
        return kernel.T
    if op.kind == "depthwise":
        return kernel[:, :, 0, :].transpose(2, 0, 1).reshape(kernel.shape[-1], -1)
    if op.kind == "flatten_dense":
        kernel = kernel.reshape(*op.kernel, -1, kernel.shape[-1])
    return kernel.transpose(3, 0, 1, 2)


def _affine(level_vars: dict, norm: str) -> tuple[np.ndarray, np.ndarray]:
    """Level BatchNorm as ``y = x * scale + shift`` (eval mode, that level's statistics)."""
    p = {k: np.asarray(v, np.float32) for k, v in level_vars["params"][norm].items()}
    s = {k: np.asarray(v, np.float32) for k, v in level_vars["batch_stats"][norm].items()}
    scale = p["scale"] / np.sqrt(s["var"] + np.float32(NORM_EPS))
    return scale, p["bias"] - s["mean"] * scale


def _c_array(name: str, values: np.ndarray) -> str:
    flat = np.asarray(values, np.float32).ravel()
    if not np.all(np.isfinite(flat)):
        raise ValueError(f"nested_c: array {name} has non-finite values")
    # 9 significant digits: the C compiler rounds each literal back to the same float32.
    items = [f"{v:.8e}f" for v in flat.tolist()]
    body = ",\n".join("  " + ", ".join(items[i:i + _PER_LINE])
                      for i in range(0, len(items), _PER_LINE))
    return f"static const float {name}[{flat.size}] = {{\n{body}\n}};\n"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise ValueError(f"nested_c: name {name!r} is not a C identifier")


def nested_c_float(family: Any, out_dir: str | os.PathLike, *,
                   name: str = "subnets_model") -> dict:
    """Write one C99 artifact holding every level of ``family`` over shared weights.

    Args:
        family: a :class:`subnets.runtime.family.Family` of a supported zoo model.
        out_dir: destination folder (created if needed).
        name: C identifier prefixing the files and the entry points.

    Returns:
        The manifest (also written as ``manifest.json``): ``files``, ``weight_bytes`` (kernels
        and biases, stored once), ``affine_bytes`` (per-level BatchNorm scale and shift),
        ``separate_bytes`` (what one copy per level would take), ``arena_bytes``,
        ``input_size``, ``output_size``, ``groups``, ``layers`` and ``levels`` (per level its
        ``widths`` and ``macs``).

    Raises:
        ValueError: the model or one of its layers has no C kernel (names both), ``name`` is
            not a C identifier, or a weight is not finite.
    """
    _check_name(name)
    net = family.net
    ops = _program(net)
    graph = net.graph
    group_names = [g.name for g in graph.groups]
    col = {g: i for i, g in enumerate(group_names)}
    levels = [{g.name: int(lv.get(g.name, g.size)) for g in graph.groups}
              for lv in family.levels]
    params = family.variables["params"]
    level_vars = [family.level_variables(i) for i in range(len(levels))]

    arrays, layer_inits, weight_bytes, affine_bytes = [], [], 0, 0
    scale_ptr = [["NULL"] * len(ops) for _ in levels]
    shift_ptr = [["NULL"] * len(ops) for _ in levels]
    for j, op in enumerate(ops):
        weight = bias = "NULL"
        in_full = graph[op.in_group].size
        if op.kind != "avgpool":
            kernel = np.asarray(get_path(params, (op.name, "kernel")), np.float32)
            weight = f"w_{op.name}"
            arrays.append(_c_array(weight, _rows(op, kernel)))
            weight_bytes += 4 * kernel.size
            if "bias" in params[op.name]:
                b = np.asarray(params[op.name]["bias"], np.float32)
                bias = f"b_{op.name}"
                arrays.append(_c_array(bias, b))
                weight_bytes += 4 * b.size
        if op.norm is not None:
            stored: list[tuple[str, np.ndarray, np.ndarray]] = []
            for i in reversed(range(len(levels))):  # the widest first, so others reuse it
                scale, shift = _affine(level_vars[i], op.norm)
                ident = next((k for k, s0, t0 in stored if np.array_equal(s0[:scale.size], scale)
                              and np.array_equal(t0[:shift.size], shift)), None)
                if ident is None:
                    ident = f"{op.norm}_l{i}"
                    stored.append((ident, scale, shift))
                    arrays += [_c_array(f"s_{ident}", scale), _c_array(f"t_{ident}", shift)]
                    affine_bytes += 8 * scale.size
                scale_ptr[i][j], shift_ptr[i][j] = f"s_{ident}", f"t_{ident}"
        kind = {"dense": "SNRT_CONV", "conv": "SNRT_CONV", "flatten_dense": "SNRT_CONV",
                "depthwise": "SNRT_DEPTHWISE", "avgpool": "SNRT_AVGPOOL"}[op.kind]
        layer_inits.append(
            f"  {{{kind}, {op.in_hw[0]}, {op.in_hw[1]}, {op.out_hw[0]}, {op.out_hw[1]}, "
            f"{op.kernel[0]}, {op.kernel[1]}, {op.stride[0]}, {op.stride[1]}, {op.pad[0]}, "
            f"{op.pad[1]}, {in_full}, {weight}, {bias}, {col[op.in_group]}, "
            f"{col[op.out_group]}, {int(op.relu)}}},  /* {op.name} */")

    full = levels[-1]
    arena = max(op.out_hw[0] * op.out_hw[1] * full[op.out_group] for op in ops[:-1])
    input_size = int(np.prod(net.input_shape))
    output_size = int(net.num_classes)
    source = _source(name, ops, arrays, layer_inits, levels, group_names, scale_ptr,
                     shift_ptr, arena)
    header = _header(name, len(levels), input_size, output_size, arena, group_names)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.h").write_text(header)
    (out / f"{name}.c").write_text(source)
    for f in RUNTIME_FILES:
        shutil.copyfile(RUNTIME_DIR / f, out / f)

    def sliced_bytes(i: int) -> int:
        return sum(4 * int(np.prod(np.shape(level_vars[i]["params"][op.name][k])))
                   for op in ops if op.kind != "avgpool" for k in params[op.name]
                   ) + sum(8 * level_vars[i]["params"][op.norm]["scale"].shape[0]
                           for op in ops if op.norm)

    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "name": name, "model": net.name,
        "input_shape": [int(s) for s in net.input_shape], "input_size": input_size,
        "output_size": output_size,
        "files": sorted([f"{name}.h", f"{name}.c", *RUNTIME_FILES, "manifest.json"]),
        "weight_bytes": int(weight_bytes), "affine_bytes": int(affine_bytes),
        "separate_bytes": int(sum(sliced_bytes(i) for i in range(len(levels)))),
        "arena_bytes": 8 * arena, "groups": group_names,
        "layers": [{"name": op.name, "kind": op.kind, "in_group": op.in_group,
                    "out_group": op.out_group, "norm": op.norm, "relu": op.relu}
                   for op in ops],
        "levels": [{"widths": {g: lv[g] for g in lv if not graph[g].fixed},
                    "macs": int(cost.macs(net, {g: lv[g] for g in lv if not graph[g].fixed}))}
                   for lv in levels],
    }
    write_json(out / "manifest.json", manifest, nonfinite="null", indent=1)
    return manifest


def _header(name: str, num_levels: int, input_size: int, output_size: int, arena: int,
            groups: list[str]) -> str:
    up = name.upper()
    guard = f"SUBNETS_{up}_H_"
    return "\n".join([
        f"/* {name}: a nested family of {num_levels} levels over shared weights, generated by",
        " * subnets.export.nested_c. Do not edit. Not reentrant: one active level per model.",
        f" * Level table columns (channel groups): {', '.join(groups)}. */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        f"#define {up}_NUM_LEVELS {num_levels}",
        f"#define {up}_INPUT_SIZE {input_size}   /* floats, the example's shape row-major */",
        f"#define {up}_OUTPUT_SIZE {output_size}  /* logits */",
        f"#define {up}_ARENA_BYTES {8 * arena}",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"extern const int {name}_num_levels;",
        "/* Activate level 0 (smallest) .. num_levels - 1 (full, the initial one): writes each",
        " * layer's widths, copies nothing. Returns 0, or -1 if out of range (level unchanged). */",
        f"int {name}_set_level(int level);",
        f"int {name}_level(void);",
        f"void {name}_run(const float *input, float *output);",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "",
        f"#endif  /* {guard} */",
        "",
    ])


def _ptr_table(rows: list[list[str]]) -> str:
    return ",\n".join("  " + ", ".join(r) for r in rows)


def _source(name: str, ops: list[_Op], arrays: list[str], layer_inits: list[str],
            levels: list[dict], groups: list[str], scale_ptr: list[list[str]],
            shift_ptr: list[list[str]], arena: int) -> str:
    n, nl = len(ops), len(levels)
    full = levels[-1]
    widths = ",\n".join("  " + ", ".join(str(lv[g]) for g in groups) for lv in levels)
    active = ",\n".join(
        f"  {{{full[op.in_group]}, {full[op.out_group]}, {scale_ptr[-1][j]}, "
        f"{shift_ptr[-1][j]}}}" for j, op in enumerate(ops))
    return "\n".join([
        f"/* {name}: generated by subnets.export.nested_c. Do not edit.",
        " * Weights are stored once, output-unit-major; every level reads a prefix of each. */",
        f'#include "{name}.h"',
        '#include "subnets_rt.h"',
        "",
        "#include <stddef.h>",
        "",
        *arrays,
        f"static const snrt_layer layers[{n}] = {{",
        "  /* kind, in_h, in_w, out_h, out_w, kh, kw, sh, sw, pad_top, pad_left, in_full,",
        "     weight, bias, in_group, out_group, relu */",
        *layer_inits,
        "};",
        "",
        f"/* [level][group]: {', '.join(groups)} */",
        f"static const int widths[{nl * len(groups)}] = {{",
        widths,
        "};",
        "",
        "/* [level][layer]: each level's own BatchNorm affine (NULL: no norm). */",
        f"static const float *const scales[{nl * n}] = {{",
        _ptr_table(scale_ptr),
        "};",
        f"static const float *const shifts[{nl * n}] = {{",
        _ptr_table(shift_ptr),
        "};",
        "",
        "/* Starts at the full level, so a run before any set_level is well defined. */",
        f"static snrt_active active[{n}] = {{",
        active,
        "};",
        f"static float arena[2 * {arena}];  /* two activation buffers, full-level size */",
        "",
        "static const snrt_model model = {",
        f"  {n}, {len(groups)}, {nl}, layers, widths, scales, shifts, active, arena,",
        f"  arena + {arena}",
        "};",
        f"static int current = {nl - 1};",
        "",
        f"const int {name}_num_levels = {nl};",
        "",
        f"int {name}_set_level(int level) {{",
        "  if (snrt_set_level(&model, level) != 0) return -1;",
        "  current = level;",
        "  return 0;",
        "}",
        "",
        f"int {name}_level(void) {{ return current; }}",
        "",
        f"void {name}_run(const float *input, float *output) {{",
        "  snrt_run(&model, input, output);",
        "}",
        "",
    ])
