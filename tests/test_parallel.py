"""Every trainer sharded over 4 simulated devices equals the single-device run; two processes.

The device count must be set before JAX starts, so each check runs in a fresh subprocess.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAINERS = textwrap.dedent("""
    import json, sys
    import jax, numpy as np, optax, subnets
    from subnets import parallel, subspace
    from subnets.nested.finetune import finetune
    from subnets.pruning import imp, make_train_fn
    assert len(jax.devices()) == 4, jax.devices()
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,), norm="batch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    v = net.init(jax.random.key(0))
    levels = [{"h0": 8, "h1": 8, "h2": 8}, {}]
    # SGD: Adam divides every coordinate by its own gradient scale, which turns float-order
    # noise in near-zero gradients into lr-sized differences; SGD keeps them at float size.
    tx = optax.sgd(0.05)
    out = {}
    for name, mesh in (("single", None), ("dp", parallel.data_mesh(4))):
        r = {}
        r["fit"] = subnets.train.fit(net, v, x, y, epochs=2, batch_size=16, tx=tx,
                                     key=jax.random.key(1), progress=False, mesh=mesh)
        fam = finetune(net, v, levels, x, y, epochs=1, batch_size=16, key=jax.random.key(2),
                       tx=tx, progress=False, mesh=mesh)
        r["finetune"] = {"v": fam.variables, "stats": fam.level_batch_stats}
        fn = make_train_fn(net, x, y, epochs=1, batch_size=16, optimizer=tx, progress=False,
                           mesh=mesh)
        lv = imp(net, v, train_fn=fn, levels=1, key=jax.random.key(3))
        r["imp"] = [l.variables for l in lv]
        for step in ("masked", "sliced"):
            cfg = subspace.LCSConfig(4, "sandwich", step=step, grid=4)
            s = subspace.init_line(net, key=jax.random.key(4))
            t = subspace.fit(net, s, x, y, epochs=1, batch_size=16, key=jax.random.key(5),
                             config=cfg, lr=0.05, progress=False, mesh=mesh)
            r["lcs_" + step] = {"base": t.base, "end": t.end}
        out[name] = jax.tree.map(lambda a: np.asarray(a).tolist(), r)
    out["init"] = jax.tree.map(lambda a: np.asarray(a).tolist(), v)
    try:
        parallel.shard_batch(parallel.data_mesh(4), np.zeros((6, 2)))
    except ValueError as e:
        out["uneven_error"] = str(e)
    print(json.dumps(out))
""")


def _run(script, env_extra, timeout=900):
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", **env_extra}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def _assert_tree_close(a, b, path=""):
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), path
        for k in a:
            _assert_tree_close(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list) and a and isinstance(a[0], dict):
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _assert_tree_close(u, v, f"{path}/{i}")
    else:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5,
                                   err_msg=path)


@pytest.mark.slow
def test_every_trainer_sharded_equals_single_device():
    res = _run(TRAINERS, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4 "
                                       "--xla_cpu_multi_thread_eigen=false"})
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    _assert_tree_close(out["dp"], out["single"])
    assert "multiple of 4" in out["uneven_error"]
    init = np.asarray(out["init"]["params"]["dense0"]["kernel"])
    for name in ("fit", "lcs_sliced"):
        got = out["single"][name]
        got = got["base"] if "base" in got else got
        assert not np.allclose(np.asarray(got["params"]["dense0"]["kernel"]), init), name


MULTI = textwrap.dedent("""
    import json, os, sys
    from subnets import parallel
    pid, n, port, ck = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if n > 1:
        parallel.initialize(f"localhost:{port}", n, pid)
    import jax, numpy as np, subnets
    from subnets import subspace
    assert jax.process_count() == n and len(jax.devices()) == 2, jax.devices()
    net = subnets.zoo.create("dnn-s", num_classes=3, input_shape=(8,), norm="batch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    mesh = parallel.data_mesh()
    v = subnets.train.fit(net, net.init(jax.random.key(0)), x, y, epochs=2, batch_size=16,
                          key=jax.random.key(1), progress=False, mesh=mesh)
    cfg = subspace.LCSConfig(4, "sandwich", step="sliced", grid=4)
    s = subspace.fit(net, subspace.init_point(net, key=jax.random.key(4)), x, y, epochs=1,
                     batch_size=16, key=jax.random.key(5), config=cfg, lr=0.05,
                     progress=False, mesh=mesh, checkpoint_dir=ck)
    out = {"fit": v, "lcs": s.base}
    print(json.dumps(jax.tree.map(lambda a: np.asarray(a).tolist(), out)))
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    """Two processes of one device each (gloo collectives) = one process with two devices."""
    port = str(_free_port())
    env = {"PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1 "
                        "--xla_cpu_multi_thread_eigen=false"}
    env = {**os.environ, **env}
    # Outputs go to files: a pipe left undrained while waiting on the other process fills
    # up, blocks its writer, and the two processes' shutdown barrier then times out.
    logs = [(tmp_path / f"out{i}.txt", tmp_path / f"err{i}.txt") for i in range(2)]
    procs = []
    for i, (o, e) in enumerate(logs):
        with open(o, "w") as fo, open(e, "w") as fe:
            procs.append(subprocess.Popen([sys.executable, "-c", MULTI, str(i), "2", port,
                                           str(tmp_path / "multi")], stdout=fo, stderr=fe,
                                          text=True, env=env, cwd=ROOT))
    for p in procs:
        p.wait(timeout=900)
    outs = [(o.read_text(), e.read_text()) for o, e in logs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    single = subprocess.run([sys.executable, "-c", MULTI, "0", "1", port,
                             str(tmp_path / "single")], capture_output=True, text=True,
                            env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"
                                                     " --xla_cpu_multi_thread_eigen=false"},
                            cwd=ROOT, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    want = json.loads(single.stdout.strip().splitlines()[-1])
    for _, (out, _) in zip(procs, outs, strict=True):
        _assert_tree_close(json.loads(out.strip().splitlines()[-1]), want)
    # the checkpoint is written once, by process 0, and is complete
    from subnets import checkpoint

    assert checkpoint.exists(tmp_path / "multi")
    _, meta = checkpoint.restore(tmp_path / "multi")
    assert meta["epoch"] == 1 and meta["train_step"] == "sliced"


def test_flags_and_mesh_errors():
    import argparse

    import jax

    from subnets import parallel

    p = argparse.ArgumentParser()
    parallel.add_flags(p)
    assert parallel.mesh_from_flags(p.parse_args(["--devices", "1"])) is None
    with pytest.raises(ValueError, match="--devices must be >= 1"):
        parallel.mesh_from_flags(p.parse_args(["--devices", "0"]))
    with pytest.raises(ValueError, match="device_count"):
        parallel.data_mesh(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="together"):
        parallel.mesh_from_flags(p.parse_args(["--coordinator", "localhost:1"]))
