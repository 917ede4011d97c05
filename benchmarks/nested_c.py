"""The nested C artifact: host switch and run time per level, and bytes vs separate copies.

Builds a REDS family (L1 importance, knapsack widths per MAC budget, the full level last) of a
zoo model with random weights (time and size do not depend on their values), exports it with
:func:`subnets.export.nested_c`, compiles it with the host ``gcc -O2`` and measures per
level:
  * ``set_level_ns``: one ``<name>_set_level`` call (mean over 1,000 alternating switches);
  * ``run_us``: one inference at an unchanged level;
  * ``switch_run_us``: a switch from another level followed by the first inference;
  * ``max_abs_diff``: the C logits vs ``Family.apply`` (float32; the same function);
and the artifact's bytes (weights once + per-level BatchNorm affine) vs one copy per level.
With ``arm-none-eabi-gcc`` present it also reports the Cortex-M4 flash and RAM of the artifact.

Usage:
    python benchmarks/nested_c.py [--quick] [--model ds-cnn-s] [--budgets 0.25,0.5,0.75]

Prints one JSON object as the last stdout line.

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 5 (one nested model in flash; switching in
    tens of microseconds on a Cortex-M4F).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BENCH_MAIN = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "NAME.h"

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* usage: prog reps input.bin output.bin; prints one JSON list, one object per level */
int main(int argc, char **argv) {
  static float x[UP_INPUT_SIZE], y[UP_OUTPUT_SIZE];
  if (argc != 4) return 2;
  int reps = atoi(argv[1]);
  FILE *in = fopen(argv[2], "rb"), *out = fopen(argv[3], "wb");
  if (!in || !out || fread(x, sizeof(float), UP_INPUT_SIZE, in) != UP_INPUT_SIZE) return 2;
  printf("[");
  for (int level = 0; level < UP_NUM_LEVELS; ++level) {
    int other = (level + 1) % UP_NUM_LEVELS;
    double t0, sw = 0.0;
    printf("%s{\"level\": %d, \"set_level_ns\": [", level ? ", " : "", level);
    for (int r = 0; r < reps; ++r) {
      t0 = now_ns();
      for (int k = 0; k < 1000; ++k) NAME_set_level(k & 1 ? level : other);
      sw = (now_ns() - t0) / 1000.0;
      printf("%s%.2f", r ? ", " : "", sw);
    }
    printf("], \"run_us\": [");
    NAME_set_level(level);
    NAME_run(x, y);
    for (int r = 0; r < reps; ++r) {
      t0 = now_ns();
      NAME_run(x, y);
      printf("%s%.3f", r ? ", " : "", (now_ns() - t0) / 1e3);
    }
    printf("], \"switch_run_us\": [");
    for (int r = 0; r < reps; ++r) {
      NAME_set_level(other);
      NAME_run(x, y);
      t0 = now_ns();
      NAME_set_level(level);
      NAME_run(x, y);
      printf("%s%.3f", r ? ", " : "", (now_ns() - t0) / 1e3);
    }
    printf("]}");
    fwrite(y, sizeof(float), UP_OUTPUT_SIZE, out);
  }
  printf("]\n");
  fclose(in);
  fclose(out);
  return 0;
}
"""


def _random_variables(net) -> dict:
    import jax

    rng = np.random.default_rng(0)

    def fill(path, s):
        a = rng.normal(scale=0.1, size=s.shape).astype(np.float32)
        return np.abs(a) + 1.0 if path[-1].key == "var" else a

    return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(net.init, jax.random.key(0)))


def _arm_sizes(out: Path, name: str) -> dict | None:
    gcc, size = shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-size")
    if gcc is None or size is None:
        return None
    total = {"text": 0, "data": 0, "bss": 0}
    for src in (f"{name}.c", "snf.c"):
        obj = out / f"{src}.o"
        subprocess.run([gcc, "-std=c99", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                        "-mfpu=fpv4-sp-d16", "-O2", "-c", str(out / src), "-o", str(obj)],
                       check=True, capture_output=True, text=True)
        row = subprocess.run([size, str(obj)], check=True, capture_output=True,
                             text=True).stdout.splitlines()[1].split()
        for k, v in zip(("text", "data", "bss"), row[:3], strict=True):
            total[k] += int(v)
    return {"flash_bytes": total["text"] + total["data"], "ram_bytes": total["data"]
            + total["bss"], **total}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (small input, few repeats)")
    p.add_argument("--model", default="ds-cnn-s")
    p.add_argument("--input-shape", default=None, help="e.g. 49,10,1 (default: the model's)")
    p.add_argument("--num-classes", type=int, default=12)
    p.add_argument("--budgets", default="0.25,0.5,0.75")
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args(argv)
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("benchmarks/nested_c.py needs a host gcc")

    from subnets import importance, zoo
    from subnets.export import nested_c
    from subnets.nested.pipeline import build_family

    shape = args.input_shape or ("25,10,1" if args.quick else None)
    shape = tuple(int(s) for s in shape.split(",")) if shape else None
    if shape and args.model.startswith("dnn"):
        shape = (int(np.prod(shape)),)
    repeats = 20 if args.quick else args.repeats
    net = zoo.create(args.model, num_classes=args.num_classes, input_shape=shape)
    v = _random_variables(net)
    fam = build_family(net, v, importance.l1(net.graph, v),
                       [float(b) for b in args.budgets.split(",")])
    x = np.random.default_rng(0).random((1,) + net.input_shape, np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        info = nested_c(fam, tmp / "out", name="bench", int8=False)
        main_c = tmp / "main.c"
        main_c.write_text(BENCH_MAIN.replace("NAME", "bench").replace("UP", "BENCH"))
        exe = tmp / "bench"
        subprocess.run([gcc, "-std=c99", "-O2", "-Wall", "-Werror", f"-I{tmp / 'out'}", "-o",
                        str(exe), str(main_c), str(tmp / "out" / "bench.c"),
                        str(tmp / "out" / "snf.c"), "-lm"],
                       check=True, capture_output=True, text=True)
        x.tofile(tmp / "x.bin")
        proc = subprocess.run([str(exe), str(repeats), str(tmp / "x.bin"), str(tmp / "y.bin")],
                              check=True, capture_output=True, text=True)
        timings = json.loads(proc.stdout)
        logits = np.fromfile(tmp / "y.bin", np.float32).reshape(len(fam), -1)
        arm = _arm_sizes(tmp / "out", "bench")

    per_level = []
    for t, lv, y in zip(timings, info["levels"], logits, strict=True):
        i = t["level"]
        per_level.append({
            "level": i, "widths": lv["widths"], "macs": lv["macs"],
            "set_level_ns": float(np.median(t["set_level_ns"])),
            "run_us": float(np.median(t["run_us"])),
            "switch_run_us": float(np.median(t["switch_run_us"])),
            "max_abs_diff": float(np.max(np.abs(y - np.asarray(fam.apply(x, i))[0])))})
    stored = info["weight_bytes"] + info["affine_bytes"]
    result = {
        "benchmark": "nested_c", "model": net.name, "input_shape": list(net.input_shape),
        "quick": args.quick, "levels": len(fam), "repeats": repeats,
        "weight_bytes": info["weight_bytes"], "affine_bytes": info["affine_bytes"],
        "artifact_bytes": stored, "separate_copies_bytes": info["separate_bytes"],
        "bytes_ratio": info["separate_bytes"] / stored, "arena_bytes": info["arena_bytes"],
        "cortex_m4": arm, "per_level": per_level,
    }
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
