"""XLA:CPU settings and convolution forms, side by side: fraction of the sgemm peak.

Full-width inference and a full-width training step of one zoo model (default cPreResNet20,
32x32x3, batch 128) under each configuration: an ``XLA_FLAGS`` setting, a thread setting or a
lowering form of :func:`subnets.ops.conv` (``subnets.ops.FORMS``). XLA reads its flags once
per process, so each configuration is a worker process; all workers compile first, then the
coordinator runs ROUNDS, asking each worker in turn for one timed inference and one timed
training step, with the numpy sgemm peak measured in every round. A change of machine load
therefore hits every configuration alike; each configuration's best round is kept, and its
fractions are taken against the best peak seen in the run.

Usage:
    python benchmarks/cpu_kernels.py [--quick] [--rounds 5] [--configs base,fast_math,...]

Prints one JSON object as its last line (``configs``: per configuration inference / train
seconds, executed GFLOP, fraction of the peak).

References:
    XLA CPU backend flags (``xla/debug_options_flags.cc``); Chellapilla et al., High Performance
    Convolutional Neural Networks for Document Processing (2006).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._timing import sgemm_peak  # noqa: E402

# name -> (extra XLA_FLAGS, ops.FORMS overrides, extra environment)
CONFIGS: dict[str, tuple[str, dict, dict]] = {
    "base": ("", {}, {}),
    "lax_only": ("", {"pointwise": False, "depthwise": False, "spatial": False}, {}),
    "spatial_gemm": ("", {"spatial": True}, {}),
    "fast_math": ("--xla_cpu_enable_fast_math=true", {}, {}),
    "one_thread": ("--xla_cpu_multi_thread_eigen=false", {}, {}),
    "xnnpack": ("--xla_cpu_use_xnnpack=true", {}, {}),
    "onednn": ("--xla_cpu_use_onednn=true", {}, {}),
    "xnn_fusion": ("--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_"
                   "CONVOLUTION,LIBRARY_FUSION_TYPE_DOT", {}, {}),
    "ynn_fusion": ("--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_"
                   "CONVOLUTION,LIBRARY_FUSION_TYPE_DOT", {}, {}),
    "onednn_fusion": ("--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_"
                      "INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_DOT", {}, {}),
    "concurrency_sched": ("--xla_cpu_enable_concurrency_optimized_scheduler=true", {}, {}),
    "vector_256": ("--xla_cpu_prefer_vector_width=256", {}, {}),
}


def worker(a) -> None:
    """Compile, report FLOPs, then answer ``go`` lines with one timed inference + step."""
    import jax
    import jax.numpy as jnp

    import subnets
    from subnets import ops

    ops.FORMS.update(json.loads(a.forms))
    shape = tuple(int(s) for s in a.input.split(","))
    net = subnets.zoo.create(a.model, num_classes=10, input_shape=shape, norm=a.norm)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((a.batch_size,) + shape, np.float32))
    y = jnp.asarray(rng.integers(0, 10, a.batch_size).astype(np.int32))
    v = jax.device_put(net.init(jax.random.key(0)))
    t = time.perf_counter()
    infer = jax.jit(lambda v, xb: net.apply(v, xb)).lower(v, x).compile()
    tx = subnets.train.default_optimizer(100)
    step = subnets.train.make_train_step(net, tx)
    state = subnets.train.init_state(v, tx)
    train = jax.jit(step).lower(state, x, y).compile() if not hasattr(step, "lower") else \
        step.lower(state, x, y).compile()
    compile_s = time.perf_counter() - t
    out0 = np.asarray(infer(v, x))
    jax.block_until_ready(train(state, x, y))
    print(json.dumps({"ready": True, "compile_s": round(compile_s, 2),
                      "infer_gflop": infer.cost_analysis()["flops"] / 1e9,
                      "train_gflop": train.cost_analysis()["flops"] / 1e9,
                      "logits_sum": float(np.sum(out0))}), flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        t = time.perf_counter()
        jax.block_until_ready(infer(v, x))
        ti = time.perf_counter() - t
        t = time.perf_counter()
        state, loss = train(state, x, y)
        jax.block_until_ready(loss)
        tt = time.perf_counter() - t
        print(json.dumps({"infer_s": ti, "train_s": tt}), flush=True)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="8x8 input, batch 16, 2 rounds")
    p.add_argument("--model", default="cpreresnet20")
    p.add_argument("--input", default=None, help="H,W,C (default 32,32,3)")
    p.add_argument("--batch-size", type=int, default=None, help="default 128")
    p.add_argument("--norm", default="instance")
    p.add_argument("--rounds", type=int, default=None, help="default 5 (quick 2)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--forms", default="{}", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.input = a.input or ("8,8,3" if a.quick else "32,32,3")
    a.batch_size = a.batch_size or (16 if a.quick else 128)
    if a.worker:
        worker(a)
        return {}
    rounds = a.rounds or (2 if a.quick else 5)
    names = [n.strip() for n in a.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; known: {sorted(CONFIGS)}")
    base_flags = os.environ.get("XLA_FLAGS", "")
    procs, ready = {}, {}
    for n in names:
        flags, forms, env = CONFIGS[n]
        e = {**os.environ, **env, "XLA_FLAGS": f"{base_flags} {flags}".strip()}
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", a.model,
               "--input", a.input, "--batch-size", str(a.batch_size), "--norm", a.norm,
               "--forms", json.dumps(forms)]
        procs[n] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, env=e)
        line = procs[n].stdout.readline()  # compile one at a time (2 cores)
        if not line:
            procs[n].wait()
            ready[n] = {"error": f"worker exited with {procs[n].returncode}"}
            del procs[n]
            continue
        ready[n] = json.loads(line)
    times = {n: {"infer_s": [], "train_s": []} for n in procs}
    peaks = []
    for _ in range(rounds):
        peaks.append(sgemm_peak())
        for n, pr in procs.items():
            pr.stdin.write("go\n")
            pr.stdin.flush()
            r = json.loads(pr.stdout.readline())
            for k in r:
                times[n][k].append(r[k])
    for pr in procs.values():
        pr.stdin.write("quit\n")
        pr.stdin.flush()
        pr.wait()
    peak = max(peaks)
    rows = {}
    for n in names:
        if n not in procs:
            rows[n] = ready[n]
            continue
        r, ti, tt = ready[n], min(times[n]["infer_s"]), min(times[n]["train_s"])
        rows[n] = {"xla_flags": CONFIGS[n][0], "forms": CONFIGS[n][1],
                   "compile_s": r["compile_s"], "infer_s": round(ti, 4), "train_s": round(tt, 4),
                   "infer_gflop": round(r["infer_gflop"], 3),
                   "train_gflop": round(r["train_gflop"], 3),
                   "infer_peak_fraction": round(r["infer_gflop"] * 1e9 / ti / peak, 4),
                   "train_peak_fraction": round(r["train_gflop"] * 1e9 / tt / peak, 4),
                   "logits_sum": r["logits_sum"]}
    out = {"model": a.model, "input_shape": a.input, "batch_size": a.batch_size, "norm": a.norm,
           "rounds": rounds, "sgemm_peak_gflops_per_round": [round(q / 1e9, 1) for q in peaks],
           "sgemm_peak_gflops": round(peak / 1e9, 1), "base_xla_flags": base_flags,
           "cpus": os.cpu_count(), "configs": rows}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
