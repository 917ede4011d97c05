"""Switch latency and memory of a REDS Family (shared weights, executables compiled ahead).

Measures, per switch between levels of a nested DS-CNN family:
  * ``switch``: ``family.switch(level)`` alone (a dict lookup and a pointer change);
  * ``switch_first_call``: switch then the first inference at the new level, vs
    ``steady_call``: an inference at an unchanged level (the difference is the real cost of
    switching: nothing is traced, compiled or copied);
  * ``naive_switch_first_call``: the alternative without ahead-of-time executables: slice the
    weights for the new level on the host, then call a jitted apply (already warm);
and the family's memory (full weights once + per-level statistics) vs separate level copies.

Usage:
    python benchmarks/switch.py [--quick] [--model ds-cnn-s] [--batch 1]

Prints one JSON object as the last stdout line.

References:
    Corti et al., REDS (arXiv:2311.13349), Sec. 5 (38 us adaptation on a Cortex-M4F).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np


def _stats_us(ns: list[int]) -> dict:
    a = np.asarray(ns, np.float64) / 1e3
    return {"median_us": float(np.median(a)), "p90_us": float(np.percentile(a, 90)),
            "min_us": float(a.min()), "n": int(a.size)}


def _random_variables(net) -> dict:
    """Weights of the right shapes; latency and memory do not depend on their values, and
    Flax's init of a conv net costs more than this whole benchmark's quick mode."""
    rng = np.random.default_rng(0)

    def fill(path, s):
        a = rng.normal(scale=0.1, size=s.shape).astype(np.float32)
        return np.abs(a) + 1.0 if path[-1].key == "var" else a

    return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(net.init, jax.random.key(0)))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (few repeats)")
    p.add_argument("--model", default="ds-cnn-s")
    p.add_argument("--input-shape", default="28,28,1")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--budgets", default="0.25,0.5,0.75")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1000)
    args = p.parse_args(argv)
    repeats = 50 if args.quick else args.repeats

    from subnets import cost, importance, zoo
    from subnets.nested.pipeline import build_family
    from subnets.transforms import slice_widths

    shape = tuple(int(s) for s in args.input_shape.split(","))
    net = zoo.create(args.model, num_classes=args.num_classes, input_shape=shape)
    v = _random_variables(net)
    budgets = [float(b) for b in args.budgets.split(",")]
    fam = build_family(net, v, importance.l1(net.graph, v), budgets)
    batch_shape = (args.batch,) + shape
    t = time.perf_counter()
    fam.compile(batch_shape)
    compile_s = time.perf_counter() - t
    x = jax.device_put(np.random.default_rng(0).random(batch_shape, np.float32))
    n = len(fam)
    for i in range(n):  # warm every level once
        fam.switch(i)
        fam(x).block_until_ready()

    switch_ns, first_ns, steady_ns = [], [], []
    level_ns: list[list[int]] = [[] for _ in range(n)]
    for r in range(repeats):
        level = (r % (n - 1)) + 1 if r % 2 else 0  # alternate the smallest with the others
        t0 = time.perf_counter_ns()
        fam.switch(level)
        t1 = time.perf_counter_ns()
        fam(x).block_until_ready()
        t2 = time.perf_counter_ns()
        fam(x).block_until_ready()
        t3 = time.perf_counter_ns()
        switch_ns.append(t1 - t0)
        first_ns.append(t2 - t0)
        steady_ns.append(t3 - t2)
        level_ns[level].append(t3 - t2)

    apply = jax.jit(lambda vv, xx: net.apply(vv, xx))
    sliced = [fam.level_variables(i) for i in range(n)]
    for s in sliced:
        apply(s, x).block_until_ready()
    naive_ns = []
    for r in range(max(10, repeats // 5)):
        level = r % n
        t0 = time.perf_counter_ns()
        s = slice_widths(net.graph, fam.variables, fam.levels[level])
        apply(s, x).block_until_ready()
        naive_ns.append(time.perf_counter_ns() - t0)

    full_macs = cost.macs(net)
    result = {
        "benchmark": "switch", "model": net.name, "input_shape": list(shape),
        "batch": args.batch, "levels": n, "quick": args.quick, "compile_all_levels_s": compile_s,
        "switch": _stats_us(switch_ns), "switch_first_call": _stats_us(first_ns),
        "steady_call": _stats_us(steady_ns), "naive_switch_first_call": _stats_us(naive_ns),
        "per_level": [{"level": i, "macs_fraction": cost.macs(net, fam.levels[i]) / full_macs,
                       "steady_call_median_us": float(np.median(level_ns[i]) / 1e3)
                       if level_ns[i] else None} for i in range(n)],
        "memory_bytes": fam.memory_bytes(), "separate_copies_bytes": fam.separate_bytes(),
        "memory_ratio": fam.separate_bytes() / fam.memory_bytes(),
        "jax": jax.__version__, "device": str(jax.devices()[0]),
    }
    print(f"switch median {result['switch']['median_us']:.2f} us (p90 "
          f"{result['switch']['p90_us']:.2f}); switch+first call "
          f"{result['switch_first_call']['median_us']:.0f} us vs steady "
          f"{result['steady_call']['median_us']:.0f} us; naive slice+call "
          f"{result['naive_switch_first_call']['median_us']:.0f} us; memory "
          f"{result['memory_bytes']} B vs {result['separate_copies_bytes']} B separate",
          file=sys.stderr)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
