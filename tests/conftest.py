"""Strict, fast test environment shared by every test module."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite compiles thousands of tiny programs and runs each a few times: there the one shared
# heap of subnets.cpu costs more in malloc contention while XLA compiles (the suite took 12.5
# instead of 9.5 minutes) than it saves at run time. Tests run glibc's defaults;
# tests/test_cpu.py checks the policy in fresh processes with the variable removed.
os.environ.setdefault("SUBNETS_KEEP_FREED_MEMORY", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("subnets", deadline=None, database=None, print_blob=True)
settings.load_profile("subnets")

# Small inputs keep every zoo model's compile + run in a second or two on a CPU.
SMALL_SHAPES = {"cpreresnet20": (8, 8, 3), "vgg16": (8, 8, 3), "vision-ds-cnn": (12, 12, 1)}


def randomize(variables, key):
    """Variables with every array random (running variances positive), so tests can fail."""
    leaves, treedef = jax.tree.flatten_with_path(variables)
    keys = jax.random.split(key, len(leaves))
    out = []
    for (path, leaf), k in zip(leaves, keys, strict=True):
        name = getattr(path[-1], "key", "")
        r = jax.random.normal(k, leaf.shape, leaf.dtype)
        if name == "var":
            r = 0.5 + jax.random.uniform(k, leaf.shape, leaf.dtype)
        elif name in ("mean", "bias"):
            r = 0.1 * r
        elif name == "scale":
            r = 1.0 + 0.1 * r
        else:
            r = leaf + 0.05 * r
        out.append(r)
    return jax.tree.unflatten(treedef, out)


@pytest.fixture(scope="session")
def zoo_nets():
    """Every zoo model at a small input shape, with randomised variables and a batch."""
    import subnets

    nets = {}
    for i, name in enumerate(subnets.zoo.NAMES):
        net = subnets.zoo.create(name, num_classes=7, input_shape=SMALL_SHAPES.get(name))
        v = randomize(jax.jit(net.init)(jax.random.key(i)), jax.random.key(100 + i))
        x = np.asarray(jax.random.normal(jax.random.key(200 + i), (3,) + net.input_shape))
        nets[name] = (net, v, x)
    return nets


@pytest.fixture(scope="session")
def _fashion_mnist_copy(tmp_path_factory):
    """A small Fashion-MNIST-format copy (gzipped IDX, both splits) made of real MNIST digits."""
    from subnets.data import idx, load

    d = tmp_path_factory.mktemp("fashion-mnist")
    for split, prefix, n in (("train", "train", 800), ("test", "t10k", 200)):
        x, y = load("mnist5k", split)
        idx.write_idx(d / f"{prefix}-images-idx3-ubyte.gz",
                      np.round(x[:n, :, :, 0] * 255).astype(np.uint8))
        idx.write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", y[:n].astype(np.uint8))
    return str(d)


@pytest.fixture
def fashion_mnist(_fashion_mnist_copy, monkeypatch):
    """Point ``fashion_mnist`` (and subprocesses) at the small copy: tests mean the same with
    and without Debian's dataset-fashion-mnist."""
    monkeypatch.setenv("SUBNETS_FASHION_MNIST_DIR", _fashion_mnist_copy)
    return _fashion_mnist_copy
