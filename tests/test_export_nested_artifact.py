"""Tests for subnets.export.nested_c(int8=False) (module subnets.export.float_c): the C artifact
computes every level of the family, stores each weight once, and switching levels in any order
gives the same outputs."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import subnets
from subnets.export import nested_c
from subnets.runtime.family import Family

GCC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(GCC is None, reason="no host gcc")
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]

# model -> (input shape, norm, levels smallest first; groups left out are at full width)
CASES = {
    "dnn-s": ((16,), None, [{"h0": 8, "h1": 20, "h2": 5}, {"h0": 64, "h1": 70, "h2": 33}, {}]),
    "dnn-s-bn": ((4, 4), "batch", [{"h0": 3, "h1": 9, "h2": 17}, {"h0": 50}, {}]),
    "ds-cnn-s": ((12, 10, 1), None, [{"g0": 4, "g1": 8, "g2": 6, "g3": 10, "g4": 8},
                                     {"g0": 16, "g1": 24, "g2": 24, "g3": 32, "g4": 40}, {}]),
    # stem stride (2, 1) and a strided first depthwise conv
    "ds-cnn-m": ((12, 10, 1), None, [{"g0": 12, "g1": 20, "g2": 9, "g3": 30, "g4": 16},
                                     {"g0": 40, "g1": 60, "g2": 50, "g3": 64, "g4": 100}, {}]),
    # VALID convs, then flatten + dense ("linear") as one whole-map conv
    "cnn-s": ((20, 10, 1), None, [{"c0": 5, "c1": 7, "lin": 3, "fc": 20},
                                  {"c0": 14, "c1": 22, "lin": 9, "fc": 64}, {}]),
    "cnn-s-bn": ((20, 10, 1), "batch", [{"c0": 3, "c1": 4, "lin": 2, "fc": 9}, {"c1": 25}, {}]),
    "vision-ds-cnn": ((16, 16, 1), None, [{"g0": 5, "g1": 7, "g2": 9, "g3": 11, "g4": 13},
                                          {"g0": 32, "g1": 32, "g2": 32}, {}]),
}


def _random_variables(net, seed):
    rng = np.random.default_rng(seed)

    def fill(path, s):
        key = path[-1].key
        if key == "var":
            return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
        if key == "scale":
            return (1.0 + 0.2 * rng.normal(size=s.shape)).astype(np.float32)
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 10
        return rng.normal(scale=1.0 / np.sqrt(fan_in), size=s.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(net.init, jax.random.key(0)))


@functools.cache
def _family(case: str, per_level_stats: bool = True) -> tuple[Family, np.ndarray]:
    shape, norm, levels = CASES[case]
    net = subnets.zoo.create(case.removesuffix("-bn"), num_classes=5, input_shape=shape,
                             norm=norm)
    v = _random_variables(net, 0)
    stats = None
    if per_level_stats and "batch_stats" in v:
        stats = [_random_variables(net, 10 + i)["batch_stats"] for i in range(len(levels))]
    fam = Family(net, v, levels, level_batch_stats=stats)
    x = np.random.default_rng(1).normal(size=(4,) + shape).astype(np.float32)
    return fam, x


MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include "NAME.h"

/* usage: prog input.bin output.bin n level... ; runs the n examples at each level in turn */
int main(int argc, char **argv) {
  if (argc < 5) return 2;
  int n = atoi(argv[3]);
  float *x = malloc(sizeof(float) * UP_INPUT_SIZE * (size_t)n);
  float y[UP_OUTPUT_SIZE];
  FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
  if (!x || !in || !out) return 2;
  if (fread(x, sizeof(float) * UP_INPUT_SIZE, (size_t)n, in) != (size_t)n) return 2;
  if (NAME_level() != NAME_num_levels - 1 || NAME_num_levels != UP_NUM_LEVELS) return 3;
  for (int a = 4; a < argc; ++a) {
    int level = atoi(argv[a]);
    if (level >= 0) {
      if (NAME_set_level(level) != 0 || NAME_level() != level) return 3;
      if (NAME_set_level(UP_NUM_LEVELS) != -1 || NAME_set_level(-1) != -1) return 3;
      if (NAME_level() != level) return 3;
    } /* a negative level: run at whatever is active */
    for (int i = 0; i < n; ++i) {
      NAME_run(x + (size_t)i * UP_INPUT_SIZE, y);
      fwrite(y, sizeof(float), UP_OUTPUT_SIZE, out);
    }
  }
  fclose(in);
  fclose(out);
  free(x);
  return 0;
}
"""


def _build(fam, tmp_path, name: str = "kws") -> tuple[dict, object]:
    info = nested_c(fam, tmp_path / "out", name=name, int8=False)
    main = tmp_path / "main.c"
    main.write_text(MAIN.replace("NAME", name).replace("UP", name.upper()))
    exe = tmp_path / "prog"
    out = tmp_path / "out"
    proc = subprocess.run([GCC, *CFLAGS, f"-I{out}", "-o", str(exe), str(main),
                           str(out / f"{name}.c"), str(out / "snf.c")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return info, exe


def _run(exe, x: np.ndarray, levels: list[int], tmp_path) -> np.ndarray:
    xin, yout = tmp_path / "x.bin", tmp_path / "y.bin"
    np.ascontiguousarray(x, np.float32).tofile(xin)
    proc = subprocess.run([str(exe), str(xin), str(yout), str(len(x)), *map(str, levels)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
    return np.fromfile(yout, np.float32).reshape(len(levels), len(x), -1)


@needs_gcc
@pytest.mark.parametrize("case", list(CASES))
def test_every_level_matches_family(case, tmp_path):
    fam, x = _family(case)
    info, exe = _build(fam, tmp_path)
    got = _run(exe, x, list(range(len(fam))), tmp_path)
    for i in range(len(fam)):
        expect = np.asarray(fam.apply(x, i))
        np.testing.assert_allclose(got[i], expect, rtol=1e-4, atol=1e-4,
                                   err_msg=f"{case} level {i}")
    assert not np.allclose(got[0], got[-1], atol=1e-2)  # the levels really differ
    macs = [lv["macs"] for lv in info["levels"]]
    assert macs == sorted(macs) and macs[0] < macs[-1]
    assert info["levels"][-1]["widths"] == fam.net.graph.full_widths()


@needs_gcc
def test_switch_order_does_not_matter(tmp_path):
    fam, x = _family("ds-cnn-s")
    _, exe = _build(fam, tmp_path)
    got = _run(exe, x, [-1, 2, 0, 2, 1, 0, -1], tmp_path)
    np.testing.assert_array_equal(got[1], got[3])  # 2, then 0, then 2 again
    np.testing.assert_array_equal(got[2], got[5])
    np.testing.assert_array_equal(got[0], got[1])  # the artifact starts at the full level
    np.testing.assert_array_equal(got[6], got[5])  # run without a switch keeps the level
    np.testing.assert_allclose(got[4], np.asarray(fam.apply(x, 1)), rtol=1e-4, atol=1e-4)


def _declared_floats(source: str, prefix: str) -> int:
    return sum(int(n) for n in re.findall(rf"static const float {prefix}\d\w*\[(\d+)\]",
                                          source))


def _layer_bytes(graph, variables, info) -> int:
    """4 x the size of every kernel and bias the artifact's steps name (read from the graph)."""
    from subnets.graph import get_path

    paths = {tuple(p) for op in info["layers"] for p in (op["kernel_path"], op["bias_path"]) if p}
    assert paths == {p for lay in graph.layers for p in (lay.path, lay.bias) if p}
    return sum(4 * np.size(get_path(variables, p)) for p in paths)


@pytest.mark.parametrize("case", ["dnn-s", "cnn-s", "ds-cnn-s"])
def test_weights_are_stored_once(case, tmp_path):
    fam, _ = _family(case)
    info = nested_c(fam, tmp_path, name="m", int8=False)
    graph = fam.net.graph
    full = _layer_bytes(graph, fam.variables, info)
    assert info["weight_bytes"] == full
    per_level = sum(_layer_bytes(graph, fam.level_variables(i), info) for i in range(len(fam)))
    assert per_level > full and info["separate_bytes"] > info["weight_bytes"]
    source = (tmp_path / "m.c").read_text()
    assert 4 * (_declared_floats(source, "w") + _declared_floats(source, "b")) == full
    assert 4 * (_declared_floats(source, "s") + _declared_floats(source, "t")) \
        == info["affine_bytes"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["weight_bytes"] == full
    assert sorted(p.name for p in tmp_path.iterdir()) == manifest["files"]


def test_per_level_batchnorm_is_kept_and_shared_stats_deduplicated(tmp_path):
    fam, _ = _family("ds-cnn-s")
    graph = fam.net.graph
    norms = [graph.norm(tuple(op["norm"])) for op in
             nested_c(fam, tmp_path / "a", int8=False)["layers"] if op["norm"]]
    assert norms and len(norms) == len(graph.norms)
    width = [{**graph.sizes, **lv} for lv in fam.levels]
    one_level = sum(8 * graph[n.group].size for n in norms)
    per_level = nested_c(fam, tmp_path / "a", int8=False)["affine_bytes"]
    assert per_level == sum(8 * w[n.group] for w in width for n in norms)  # one per level
    shared, _ = _family("ds-cnn-s", per_level_stats=False)
    shared_bytes = nested_c(shared, tmp_path / "b", int8=False)["affine_bytes"]
    assert shared_bytes == one_level  # prefixes reused


@needs_gcc
def test_residual_add_max_pool_flatten_program_exports(tmp_path):
    """Not a zoo list: any supported program exports (residual add, max pool, flatten,
    a standalone norm is not needed here); every level equals the lowered program in numpy."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import _mcu_models as mm

    from subnets.export.int8 import lower
    from subnets.export.int8_float import run_float

    fam = mm.resnet(per_level_stats=True)
    info, exe = _build(fam, tmp_path)
    assert {"add", "maxpool"} <= {op["kind"] for op in info["layers"]}
    x = np.random.default_rng(3).normal(size=(3,) + fam.net.graph.input_shape)
    got = _run(exe, x.astype(np.float32), list(range(len(fam.levels))), tmp_path)
    steps, logits = lower(fam.net.graph)
    for i in range(len(fam.levels)):
        ref = run_float(steps, fam.level_variables(i), x)[logits].reshape(len(x), -1)
        np.testing.assert_allclose(got[i], ref, rtol=1e-4, atol=1e-4, err_msg=f"level {i}")
    assert not np.allclose(got[0], got[-1], atol=1e-2)


def test_unsupported_op_and_group_norm_are_named_and_nothing_written(tmp_path):
    import flax.linen as nn

    from subnets.export import ExportError

    class Tanh(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(jnp.tanh(nn.Dense(8)(x)))

    net = subnets.models.from_linen(Tanh(), np.zeros((1, 4), np.float32))
    fam = Family(net, net.init(jax.random.key(0)), [{}])
    with pytest.raises(ExportError, match="activation 'tanh'"):
        nested_c(fam, tmp_path, int8=False)
    net = subnets.zoo.create("ds-cnn-s", num_classes=3, input_shape=(8, 8, 1), norm="group")
    fam = Family(net, _random_variables(net, 0), [{}])
    with pytest.raises(ExportError, match="statistics from each input"):
        nested_c(fam, tmp_path, int8=False)
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(ValueError, match="C identifier"):
        nested_c(_family("dnn-s")[0], tmp_path, name="1bad-name", int8=False)


ARM_GCC, ARM_SIZE = shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-size")


@pytest.mark.skipif(ARM_GCC is None or ARM_SIZE is None, reason="no arm-none-eabi toolchain")
def test_cortex_m4_build_fits_weights_once(tmp_path):
    fam, _ = _family("ds-cnn-s")
    info = nested_c(fam, tmp_path, name="kws", int8=False)
    sizes = {}
    for src in ("kws.c", "snf.c"):
        obj = tmp_path / (src[:-2] + ".o")
        proc = subprocess.run([ARM_GCC, "-std=c99", "-mcpu=cortex-m4", "-mthumb",
                               "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2", "-Wall",
                               "-Werror", "-c", str(tmp_path / src), "-o", str(obj)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = subprocess.run([ARM_SIZE, str(obj)], capture_output=True, text=True,
                             check=True).stdout.splitlines()[1].split()
        sizes[src] = dict(zip(("text", "data", "bss"), map(int, out[:3]), strict=True))
    model = sizes["kws.c"]
    weights = info["weight_bytes"] + info["affine_bytes"]
    # const weights live in flash (.text/.rodata) once; the table and code add little
    assert weights <= model["text"] < weights + 4096
    assert model["bss"] >= info["arena_bytes"]
    assert model["data"] < 1024
    assert sizes["snf.c"]["text"] < 4096


@needs_gcc
def test_linen_model_with_pools_and_residual_float_matches_family(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_mcu_zoo import _linen_pool_residual

    fam = _linen_pool_residual()
    _, exe = _build(fam, tmp_path)
    x = np.random.default_rng(2).normal(size=(3, 8, 8, 2)).astype(np.float32)
    got = _run(exe, x, [0, 1], tmp_path)
    for i in range(2):
        np.testing.assert_allclose(got[i], np.asarray(fam.apply(x, i)), rtol=1e-4, atol=1e-4)


def test_padded_avg_pool_is_refused_naming_the_op(tmp_path):
    import flax.linen as nn

    from subnets.export import ExportError

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.avg_pool(nn.Conv(4, (3, 3))(x), (3, 3), padding="SAME")
            return nn.Dense(2)(h.mean(axis=(1, 2)))

    net = subnets.models.from_linen(Net(), np.zeros((1, 6, 6, 1), np.float32))
    fam = Family(net, net.init(jax.random.key(0)), [{}])
    with pytest.raises(ExportError, match="avg_pool.*count_include_pad"):
        nested_c(fam, tmp_path, int8=False)


ARM_QEMU = shutil.which("qemu-system-arm")


@pytest.mark.skipif(ARM_GCC is None or ARM_QEMU is None, reason="no arm toolchain / QEMU")
def test_float_firmware_runs_on_emulated_cortex_m4(tmp_path):
    from subnets.export import firmware

    fam, x = _family("ds-cnn-s")
    nested_c(fam, tmp_path, name="model", int8=False)
    rows = firmware.run(firmware.build(tmp_path, x[:2], "m4", float32=True), "m4", timeout=600)
    for i, row in enumerate(rows):
        assert row["classes"] == np.asarray(fam.apply(x[:2], i)).argmax(1).tolist()
