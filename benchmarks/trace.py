"""Trace time per zoo model: ``subnets.graph.trace`` (jaxpr + union-find) and its run check.

Usage: ``python benchmarks/trace.py [--quick]``. Prints one JSON object as its last line:
``{"models": {name: seconds}, "verified": {name: seconds}, ...}`` where ``models`` is the
median time of ``trace(..., verify=False)`` and ``verified`` one ``trace`` with the run check
(an XLA compilation of model + program). Inputs are the tests' small shapes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import subnets  # noqa: E402
from subnets.graph import trace  # noqa: E402

SMALL = {"cpreresnet20": (8, 8, 3), "vgg16": (8, 8, 3), "vision-ds-cnn": (12, 12, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 timed runs, no run check")
    args = ap.parse_args()
    repeats = 2 if args.quick else 5
    times, verified = {}, {}
    for name in subnets.zoo.NAMES:
        net = subnets.zoo.create(name, num_classes=7, input_shape=SMALL.get(name))
        if hasattr(net, "depthwise"):
            net = dataclasses.replace(net, depthwise="conv")
        shapes = jax.eval_shape(net.init, jax.random.key(0))
        v = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
        x = np.zeros((2, *net.input_shape), np.float32)
        runs = []
        for _ in range(repeats + 1):  # the first run warms JAX's caches
            t = time.perf_counter()
            trace(net.apply, v, x, verify=False)
            runs.append(time.perf_counter() - t)
        times[name] = statistics.median(runs[1:])
        if not args.quick:
            t = time.perf_counter()
            trace(net.apply, v, x)
            verified[name] = time.perf_counter() - t
        print(f"{name:14s} trace {times[name]:.3f} s"
              + (f"  with run check {verified[name]:.2f} s" if verified else ""), flush=True)
    print(json.dumps({"models": times, "verified": verified, "repeats": repeats,
                      "quick": args.quick, "shapes": "tests' small shapes",
                      "jax": jax.__version__}))


if __name__ == "__main__":
    main()
