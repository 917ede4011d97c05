"""Training speed: examples/s, executed vs useful FLOPs and the fraction of the sgemm peak.

Side by side in ONE run (the machine may be shared: ratios measured together are what to
read), for one model:

- the structured LCS step with the sandwich's n = 4 levels {0.25, 1, U, U}: the masked steps
  (``step="masked"``, ``levels="vmap"`` and ``"unroll"``), the vmapped masked step as issue 12
  measured it (plain ``lax`` convolutions, glibc's allocation defaults), the sliced step
  (``step="sliced"``) and which one ``step="auto"`` picks;
- inference at width 0.25 vs full width, at the batch size and at batch 1
  (``inference_narrow``: the time fraction next to the MAC fraction);
- full-width inference and training with freed host memory kept mapped (``subnets.cpu``, the
  default) vs glibc's defaults, alternating in this process (``host_memory``);
- the REDS joint fine-tuning step over four nested levels (sliced by construction);
- plain full-width training and full-width inference at the batch size;
- 1 vs 4 simulated CPU devices (a subprocess with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=4``) for the base and the sliced LCS step.

Executed FLOPs come from XLA's cost analysis of the compiled programs; useful FLOPs are
``2 * MACs * batch`` for inference and ``6 * MACs * batch`` for a training step (forward plus
the two backward products) at each level's widths. The peak is the best float32 numpy matmul
(2048 x 2048), measured at the start and the end of the run (the better is used).
``compile_s`` is the first step's time minus a warm
step's.

Usage:
    python benchmarks/train_speed.py [--quick] [--model cpreresnet20] [--input 32,32,3]
        [--batch-size 128] [--steps 3] [--out train_speed.png] [--no-devices]

Prints one JSON object as its last line; writes a PNG.

References:
    Nunez et al., LCS (arXiv:2110.04252); Corti et al., REDS (arXiv:2311.13349).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import subnets  # noqa: E402
from benchmarks._timing import sgemm_peak  # noqa: E402
from subnets import cpu, subspace  # noqa: E402
from subnets._plot import side_plot  # noqa: E402
from subnets.nested.finetune import make_joint_step  # noqa: E402


def _flops(fn, *args) -> float:
    return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])


def _timed(run, steps: int) -> tuple[float, float]:
    """(first call s, warm s per call): ``run(i)`` returns something to block on."""
    t = time.perf_counter()
    jax.block_until_ready(run(0))
    first = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(steps):
        jax.block_until_ready(run(i))
    return first, (time.perf_counter() - t) / steps


def _row(batch, per_step, executed, useful, peak, first):
    return {"examples_per_s": round(batch / per_step, 2), "step_s": round(per_step, 4),
            "executed_gflop": round(executed / 1e9, 3), "useful_gflop": round(useful / 1e9, 3),
            "executed_over_useful": round(executed / useful, 3),
            "peak_fraction": round(executed / per_step / peak, 4),
            "compile_s": round(max(first - per_step, 0.0), 2)}


@contextlib.contextmanager
def _as_filed():
    """What the program ran with when issue 12 was filed: plain ``lax`` convolutions
    (``ops.FORMS`` off) and glibc's allocation defaults (``subnets.cpu`` off)."""
    from subnets import ops

    forms, kept = dict(ops.FORMS), cpu.freed_memory_kept()
    ops.FORMS.update(dict.fromkeys(ops.FORMS, False))
    cpu.keep_freed_memory(False)
    try:
        yield
    finally:
        ops.FORMS.update(forms)
        cpu.keep_freed_memory(kept)


def _setting(name: str):
    return _as_filed() if name.endswith("_filed") else contextlib.nullcontext()


def lcs_rows(net, x, y, steps, peak, out, grid=None):
    """The LCS variants compiled first, then timed in interleaved rounds (one step of each
    per round, the best round kept), so a change of machine load hits every variant alike.

    ``lcs_masked_vmap_filed`` is the default step as the issue measured it: the vmapped masked
    step traced with plain ``lax`` convolutions and run under glibc's allocation defaults. A
    change of allocation policy empties the heap, so every switch is followed by one untimed
    step (the largest program) before anything is timed.
    """
    s = subspace.init_point(net, key=jax.random.key(0))
    tx = subspace.default_optimizer(100, lr=0.05)
    macs = lambda a: subnets.cost.macs(net, subspace.channel_counts(net.graph, 0.25 + 0.75 * a))
    base = subspace.LCSConfig(4, "sandwich")
    if grid is not None:  # --quick: fewer grid points, fewer programs to compile
        base = dataclasses.replace(base, grid=grid)
    keys = [jax.random.key(i) for i in range(steps + 1)]
    variants = {}
    for name, cfg in (("lcs_masked_vmap_filed", dataclasses.replace(base, step="masked")),
                      ("lcs_masked_vmap", dataclasses.replace(base, step="masked")),
                      ("lcs_masked_unroll", dataclasses.replace(base, step="masked",
                                                                levels="unroll")),
                      ("lcs_sliced", dataclasses.replace(base, step="sliced"))):
        step = subspace.make_train_step(net, tx, cfg, total_steps=100)
        state0 = subspace.init_state(s, tx)
        t = time.perf_counter()
        if name == "lcs_sliced":  # every grid point's program, compiled up front
            step.precompile(state0, x, y)
        with _setting(name):
            state, _ = step(state0, x, y, keys[-1])
            jax.block_until_ready(state)
        variants[name] = {"step": step, "state0": state0, "state": state, "alphas": [],
                          "times": [], "compile": time.perf_counter() - t}

    def timed(v, i):
        t = time.perf_counter()
        v["state"], m = v["step"](v["state"], x, y, keys[i])
        jax.block_until_ready(v["state"])
        v["times"].append(time.perf_counter() - t)
        v["alphas"].append(np.asarray(m["alphas"]))

    warm = variants["lcs_masked_vmap"]
    for i in range(steps):
        for name, v in variants.items():
            if name.endswith("_filed"):
                with _as_filed():
                    jax.block_until_ready(v["step"](v["state"], x, y, keys[i]))  # untimed
                    timed(v, i)
                jax.block_until_ready(warm["step"](warm["state"], x, y, keys[i]))  # untimed
            else:
                timed(v, i)
    rows = {}
    for name, v in variants.items():
        per, step = min(v["times"]), v["step"]
        alphas = np.stack(v["alphas"])
        useful = float(np.mean([sum(6 * macs(a) * len(x) for a in al) for al in alphas]))
        if name == "lcs_sliced":
            executed = float(np.mean([step.flops(v["state0"], al, x, y) for al in alphas]))
        else:
            with _setting(name):
                executed = _flops(step._step, v["state0"], x, y, keys[0])
        rows[name] = {**_row(len(x), per, executed, useful, peak, v["compile"]),
                      "programs": step.traces}
    out["lcs"] = rows
    out["lcs_auto_step"] = subspace.sliced.choose_step(net, base, "structured")
    auto = rows["lcs_sliced" if out["lcs_auto_step"] == "sliced" else "lcs_masked_vmap"]
    eps = auto["examples_per_s"]
    out["headline"] = {
        "default_structured_lcs_examples_per_s": eps,
        "filed_default_vmapped_examples_per_s": rows["lcs_masked_vmap_filed"]["examples_per_s"],
        "speedup_vs_filed_default": round(eps / rows["lcs_masked_vmap_filed"]["examples_per_s"],
                                          3),
        "old_default_vmapped_examples_per_s": rows["lcs_masked_vmap"]["examples_per_s"],
        "speedup_vs_old_default": round(eps / rows["lcs_masked_vmap"]["examples_per_s"], 3),
        "sliced_executed_over_useful": rows["lcs_sliced"]["executed_over_useful"]}


def host_memory_rows(net, x, y, steps, peak, out):
    """Full-width inference and training step with freed memory kept mapped
    (``subnets.cpu``, the library default) vs glibc's defaults, the same compiled programs,
    alternating in one process; minor page faults per call counted alongside."""
    import resource

    v = jax.device_put(net.init(jax.random.key(0)))
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    infer = jax.jit(lambda v, xb: net.apply(v, xb)).lower(v, xd).compile()
    tx = subnets.train.default_optimizer(100)
    step = subnets.train.make_train_step(net, tx)
    state = subnets.train.init_state(v, tx)
    runs = {"infer": lambda: infer(v, xd), "train": lambda: step(state, xd, yd)[1]}
    times = {(k, p): [] for k in runs for p in ("kept", "glibc")}
    kept = cpu.freed_memory_kept()
    faults = dict.fromkeys(times, 0)
    for _ in range(max(3, steps)):
        for policy in ("kept", "glibc"):
            cpu.keep_freed_memory(policy == "kept")
            for fn in runs.values():
                jax.block_until_ready(fn())  # untimed: the heap refills after a switch
            for k, fn in runs.items():
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t = time.perf_counter()
                jax.block_until_ready(fn())
                times[k, policy].append(time.perf_counter() - t)
                faults[k, policy] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    cpu.keep_freed_memory(kept)
    flops = {"infer": infer.cost_analysis()["flops"],
             "train": _flops(step, state, xd, yd)}
    rows = {}
    for (k, policy), ts in times.items():
        rows[f"{k}_{policy}"] = {"s": round(min(ts), 4),
                                 "peak_fraction": round(flops[k] / min(ts) / peak, 4),
                                 "minor_faults_per_call": faults[k, policy]}
    for k in runs:
        rows[f"{k}_speedup"] = round(min(times[k, "glibc"]) / min(times[k, "kept"]), 3)
    out["host_memory"] = rows


def reds_row(net, x, y, steps, peak, out):
    v = net.init(jax.random.key(0))
    levels = [{g.name: max(1, round(g.size * f)) for g in net.graph.free}
              for f in (0.25, 0.5, 0.75)] + [{}]
    trainer = make_joint_step(net, levels)
    state = trainer.init(v)
    holder = {"state": state}

    def run(i):
        holder["state"], per = trainer.step(holder["state"], x, y)
        return per

    first, per = _timed(run, steps)
    executed = _flops(trainer.step, state, x, y)
    useful = sum(6 * subnets.cost.macs(net, lv) * len(x) for lv in levels)
    out["reds_joint"] = _row(len(x), per, executed, useful, peak, first)


def full_width_rows(net, x, y, steps, peak, out):
    v = jax.device_put(net.init(jax.random.key(0)))
    macs = subnets.cost.macs(net)
    apply = jax.jit(lambda v, xb: net.apply(v, xb))
    xd = jnp.asarray(x)
    first, per = _timed(lambda i: apply(v, xd), max(3, steps))
    out["inference_full"] = _row(len(x), per, _flops(lambda v, xb: net.apply(v, xb), v, xd),
                                 2 * macs * len(x), peak, first)
    tx = subnets.train.default_optimizer(100)
    step = subnets.train.make_train_step(net, tx)
    holder = {"state": subnets.train.init_state(v, tx)}

    def run(i):
        holder["state"], loss = step(holder["state"], xd, y)
        return loss

    first, per = _timed(run, steps)
    out["train_full"] = _row(len(x), per, _flops(step, holder["state"], xd, y),
                             6 * macs * len(x), peak, first)


def narrow_rows(net, x, steps, out, width=0.25):
    """Inference at ``width`` (every free group cut to that fraction, physically sliced
    arrays) vs full width, at the batch size and at batch 1, alternating: the time fraction
    against the MAC fraction."""
    from subnets.transforms import slice_widths

    v = jax.device_put(net.init(jax.random.key(0)))
    counts = subspace.channel_counts(net.graph, width)
    small = jax.device_put(slice_widths(net.graph, v, counts))
    apply = jax.jit(lambda v, xb: net.apply(v, xb))
    row = {"width": width, "macs_fraction": round(subnets.cost.macs(net, counts)
                                                  / subnets.cost.macs(net), 4)}
    for batch in (len(x), 1):
        xb = jnp.asarray(x[:batch])
        times = {"full": [], "narrow": []}
        for params in (v, small):
            jax.block_until_ready(apply(params, xb))
        reps = max(3, steps) * (20 if batch == 1 else 1)
        for _ in range(reps):
            for name, params in (("full", v), ("narrow", small)):
                t = time.perf_counter()
                jax.block_until_ready(apply(params, xb))
                times[name].append(time.perf_counter() - t)
        row[f"batch_{batch}"] = {"full_s": round(min(times["full"]), 5),
                                 "narrow_s": round(min(times["narrow"]), 5),
                                 "time_fraction": round(min(times["narrow"])
                                                        / min(times["full"]), 4)}
    out["inference_narrow"] = row


def ops_rows(net, x, y, steps, out):
    """Full-width gradient with 1x1 convolutions as GEMMs (``subnets.ops.conv``) vs plain
    ``lax.conv_general_dilated``, alternating the two so load changes hit both alike."""
    from jax import lax

    from subnets import ops

    v = net.init(jax.random.key(0))
    xd, yd = jnp.asarray(x), jnp.asarray(y)

    def loss(p, xb, yb):
        logits, _ = net.apply({**v, "params": p}, xb, train=True, mutable=True)
        return subnets.train.cross_entropy(logits, yb)

    fast, progs, times = ops.conv, {}, {"gemm": [], "lax": []}
    try:
        for name, fn in (("gemm", fast), ("lax", lax.conv_general_dilated)):
            ops.conv = fn
            progs[name] = jax.jit(jax.grad(loss)).lower(v["params"], xd, yd).compile()
            jax.block_until_ready(progs[name](v["params"], xd, yd))
    finally:
        ops.conv = fast
    for _ in range(max(2, steps)):
        for name, g in progs.items():
            t = time.perf_counter()
            jax.block_until_ready(g(v["params"], xd, yd))
            times[name].append(time.perf_counter() - t)
    out["conv1x1_gemm"] = {"grad_s_gemm": round(min(times["gemm"]), 4),
                           "grad_s_lax": round(min(times["lax"]), 4),
                           "speedup": round(min(times["lax"]) / min(times["gemm"]), 3)}


def graph_forms_rows(steps, out, model="vision-ds-cnn", shape=(32, 32, 1), batch=64):
    """``subnets.graph.run`` (what the masked structured / quantised LCS steps execute) on a
    depthwise-separable zoo model: the gradient with ``ops.conv``'s CPU forms (depthwise
    through shifted products, 1x1 through GEMMs) vs plain ``lax`` convolutions, alternating."""
    from subnets import graph, ops

    net = subnets.zoo.create(model, num_classes=10, input_shape=shape)
    v = net.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    xd = jnp.asarray(rng.random((batch,) + shape, np.float32))
    yd = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))

    def loss(p, xb, yb):
        logits, _ = graph.run(net.graph, {**v, "params": p}, xb, train=True)
        return subnets.train.cross_entropy(logits, yb)

    saved, progs = dict(ops.FORMS), {}
    times = {"forms": [], "lax": []}
    try:
        for name in ("forms", "lax"):
            on = name == "forms"
            ops.FORMS.update({"pointwise": on, "depthwise": on})
            progs[name] = jax.jit(jax.grad(loss)).lower(v["params"], xd, yd).compile()
            jax.block_until_ready(progs[name](v["params"], xd, yd))
    finally:
        ops.FORMS.update(saved)
    for _ in range(max(3, steps)):
        for name, g in progs.items():
            t = time.perf_counter()
            jax.block_until_ready(g(v["params"], xd, yd))
            times[name].append(time.perf_counter() - t)
    out["graph_run_forms"] = {"model": model, "input_shape": list(shape), "batch_size": batch,
                              "grad_s_forms": round(min(times["forms"]), 4),
                              "grad_s_lax": round(min(times["lax"]), 4),
                              "speedup": round(min(times["lax"]) / min(times["forms"]), 3)}


def devices_rows(net, x, y, steps, out):
    """In a 4-device process: the base step and the sliced LCS step, 1 vs 4 devices."""
    from subnets import parallel

    s = subspace.init_point(net, key=jax.random.key(0))
    tx = subspace.default_optimizer(100, lr=0.05)
    # A grid of 4 bounds the compilations (the ratio 1 vs 4 devices is what is read here).
    cfg = subspace.LCSConfig(4, "sandwich", step="sliced", grid=4)
    keys = [jax.random.key(i) for i in range(steps + 1)]
    for n in (1, 4):
        mesh = None if n == 1 else parallel.data_mesh(n)
        step = subspace.make_train_step(net, tx, cfg, total_steps=100, mesh=mesh)
        h = {"state": subspace.init_state(s, tx, mesh=mesh)}
        step.precompile(h["state"], x, y)

        def run(i, step=step, h=h):
            h["state"], m = step(h["state"], x, y, keys[i % len(keys)])
            return h["state"]

        _, per = _timed(run, steps)
        tx2 = subnets.train.default_optimizer(100)
        tstep = subnets.train.make_train_step(net, tx2)
        v = net.init(jax.random.key(0))
        t = {"state": parallel.replicate(mesh, subnets.train.init_state(v, tx2))}
        xb, yb = parallel.shard_batch(mesh, x, y) if mesh is not None else (x, y)

        def trun(i, t=t, tstep=tstep, xb=xb, yb=yb):
            t["state"], loss = tstep(t["state"], xb, yb)
            return loss

        _, tper = _timed(trun, steps)
        out[f"devices_{n}"] = {"lcs_sliced_examples_per_s": round(len(x) / per, 2),
                               "train_full_examples_per_s": round(len(x) / tper, 2)}


def _plot(out, path):
    from subnets._plot import panels

    names = list(out["lcs"]) + ["reds_joint", "train_full", "inference_full"]
    rows = [out["lcs"][n] for n in out["lcs"]] + [out[n] for n in names[len(out["lcs"]):]]
    xs = np.arange(len(names))
    with panels(path, 1, 2, title=f"{out['model']} {out['input_shape']} batch "
                f"{out['batch_size']} (one run, side by side)", figsize=(11, 4)) as axes:
        ax = axes[0, 0]
        ax.bar(xs, [r["examples_per_s"] for r in rows], color="tab:blue")
        ax.set_xticks(xs, names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("examples / s")
        ax = axes[0, 1]
        ax.bar(xs - 0.2, [r["executed_over_useful"] for r in rows], 0.4,
               label="executed / useful FLOPs")
        ax.bar(xs + 0.2, [r["peak_fraction"] for r in rows], 0.4,
               label="fraction of sgemm peak")
        ax.set_xticks(xs, names, rotation=30, ha="right", fontsize=7)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run (small input and batch)")
    p.add_argument("--model", default="cpreresnet20")
    p.add_argument("--input", default=None, help="H,W,C (default 32,32,3; quick 8,8,3)")
    p.add_argument("--batch-size", type=int, default=None, help="default 128 (quick 16)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 3, quick 1)")
    p.add_argument("--out", default="train_speed.png", help="PNG path")
    p.add_argument("--no-devices", action="store_true", help="skip the 4-device subprocess")
    p.add_argument("--lcs-only", action="store_true",
                   help="only the LCS variants (the headline) and the sgemm peak")
    p.add_argument("--graph-forms-only", action="store_true",
                   help="only graph.run's gradient with ops.conv's CPU forms vs lax convs")
    p.add_argument("--devices-worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    shape = tuple(int(s) for s in (a.input or ("8,8,3" if a.quick else "32,32,3")).split(","))
    batch = a.batch_size or (16 if a.quick else 128)
    steps = a.steps or (1 if a.quick else 3)
    norm = "instance"
    net = subnets.zoo.create(a.model, num_classes=10, input_shape=shape, norm=norm)
    rng = np.random.default_rng(0)
    x = rng.random((batch,) + shape, np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    out = {"model": a.model, "input_shape": list(shape), "batch_size": batch, "norm": norm,
           "levels": 4, "steps": steps, "backend": jax.default_backend(),
           "xla_flags": os.environ.get("XLA_FLAGS", ""), "cpus": os.cpu_count(),
           "shared_machine_note": "ratios are measured side by side in this one run"}
    if a.devices_worker:
        devices_rows(net, x, y, steps, out)
        print(json.dumps(out))
        return out
    if a.graph_forms_only:
        graph_forms_rows(steps, out, shape=(16, 16, 1) if a.quick else (32, 32, 1),
                         batch=16 if a.quick else 64)
        print(json.dumps(out))
        return out
    peak = sgemm_peak()
    out["sgemm_peak_gflops"] = round(peak / 1e9, 1)
    if not a.lcs_only:
        full_width_rows(net, x, y, steps, peak, out)
        host_memory_rows(net, x, y, steps, peak, out)
        narrow_rows(net, x, steps, out)
        ops_rows(net, x, y, steps, out)
        graph_forms_rows(steps, out)
    lcs_rows(net, x, y, steps, peak, out, grid=4 if a.quick else None)
    if not a.lcs_only:
        reds_row(net, x, y, steps, peak, out)
    # On a shared machine the peak moves during the run: every fraction is taken against the
    # best peak seen (start or end), the conservative reading.
    end = sgemm_peak()
    out["sgemm_peak_gflops_end"] = round(end / 1e9, 1)
    if end > peak:
        for row in [*out["lcs"].values(), *[out[k] for k in ("reds_joint", "train_full",
                                                             "inference_full") if k in out]]:
            row["peak_fraction"] = round(row["peak_fraction"] * peak / end, 4)
        out["sgemm_peak_gflops"] = round(end / 1e9, 1)
    if not a.no_devices and not a.lcs_only:
        env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                                           " --xla_force_host_platform_device_count=4").strip()}
        cmd = [sys.executable, __file__, "--devices-worker", "--model", a.model, "--input",
               ",".join(map(str, shape)), "--batch-size", str(batch), "--steps", str(steps)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        if res.returncode != 0:
            raise RuntimeError(f"4-device worker failed:\n{res.stderr[-3000:]}")
        worker = json.loads(res.stdout.strip().splitlines()[-1])
        out["devices"] = {k: worker[k] for k in ("devices_1", "devices_4")}
    if a.out and not a.lcs_only:
        out["png"] = side_plot(lambda p: _plot(out, p), a.out)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
