"""The int8 nested artifact of traced zoo models (DS-CNN-S, vision-ds-cnn, a pre-activation
ResNet-20 with residual adds at a tiny input): every level bit-exact with TFLite-Micro."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_mcu_int8 import _host_outputs, _tflm  # noqa: E402

import subnets  # noqa: E402
from subnets.export import uniform_levels  # noqa: E402
from subnets.export.int8_tflite import level_tflite  # noqa: E402
from subnets.export.nested import nested_c, prepare  # noqa: E402
from subnets.runtime.family import Family  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a host C compiler")


@pytest.mark.parametrize("name,shape", [("ds-cnn-s", (49, 10, 1)),
                                        ("vision-ds-cnn", (16, 16, 3)),
                                        # tracing ResNet-20 alone takes ~25 s on this host;
                                        # the default run keeps the small residual program
                                        # of test_mcu_int8 (adds, max pool, flatten)
                                        pytest.param("cpreresnet20", (8, 8, 3),
                                                     marks=pytest.mark.slow)])
def test_zoo_model_every_level_bit_exact(tmp_path, name, shape):
    net = subnets.zoo.create(name, num_classes=5, input_shape=shape)
    v = jax.tree.map(np.asarray, net.init(jax.random.key(0)))
    fam = Family(net, v, uniform_levels(net.graph, [0.25, 0.5, 0.75, 1.0]))
    rep = np.random.default_rng(0).normal(0, 1, (6,) + shape).astype(np.float32)
    m = nested_c(fam, tmp_path, representative=rep, name="model")
    steps, qz = prepare(fam, rep)
    xq = np.clip(np.round(rep / m["input"]["scale"]) + m["input"]["zero_point"], -128,
                 127).astype(np.int8)
    host = _host_outputs(tmp_path, xq, len(fam.levels))
    if name == "cpreresnet20":
        assert any(s.kind == "add" for s in steps) and any(s.affine for s in steps)
    for i in range(len(fam.levels)):
        ref = _tflm(level_tflite(steps, qz["widths"][i], i), xq)
        assert ref.std() > 0
        np.testing.assert_array_equal(host[i], ref, err_msg=f"{name} level {i}")


def _linen_pool_residual():
    """A Linen model that is not in the zoo: conv, max pool, a residual block, avg pool."""
    import flax.linen as nn

    import subnets.models

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Conv(8, (3, 3), padding="SAME")(x))
            h = nn.max_pool(h, (2, 2), strides=(2, 2))
            r = nn.relu(nn.Conv(6, (3, 3), padding="SAME")(h))
            h = nn.relu(h + nn.Conv(8, (3, 3), padding="SAME")(r))
            h = nn.avg_pool(h, (2, 2), strides=(1, 1))
            return nn.Dense(3)(h.mean(axis=(1, 2)))

    net = subnets.models.from_linen(Net(), np.zeros((1, 8, 8, 2), np.float32))
    v = jax.tree.map(np.asarray, net.init(jax.random.key(0)))
    return Family(net, v, uniform_levels(net.graph, [0.5, 1.0]))


def test_linen_model_with_pools_and_residual_int8_bit_exact(tmp_path):
    fam = _linen_pool_residual()
    rep = np.random.default_rng(0).normal(0, 1, (6, 8, 8, 2)).astype(np.float32)
    m = nested_c(fam, tmp_path, representative=rep, name="model")
    steps, qz = prepare(fam, rep)
    assert {"add", "maxpool", "avgpool"} <= {s.kind for s in steps}
    xq = np.clip(np.round(rep / m["input"]["scale"]) + m["input"]["zero_point"], -128,
                 127).astype(np.int8)
    host = _host_outputs(tmp_path, xq, len(fam.levels))
    for i in range(len(fam.levels)):
        ref = _tflm(level_tflite(steps, qz["widths"][i], i), xq)
        assert ref.std() > 0
        np.testing.assert_array_equal(host[i], ref, err_msg=f"level {i}")
