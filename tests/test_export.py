"""TFLite conversion and the TFLite-Micro interpreter: real int8 round trips, op checks, arena.

Conversion imports TensorFlow (~10 s once per process) and takes ~1 s per small model, so the
models here are small zoo networks at small inputs; the 1,000-sample must-show runs are in
test_export_slow.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import subnets
from subnets import export

pytest.importorskip("tensorflow")
pytest.importorskip("tflite_micro")

SHAPE = (16, 8, 1)


@pytest.fixture(scope="module")
def dscnn():
    """A small DS-CNN (real zoo model: conv, BatchNorm, depthwise, pointwise, pooling)."""
    net = subnets.zoo.create("ds-cnn-s", num_classes=5, input_shape=SHAPE)
    v = net.init(jax.random.key(0))
    # Non-trivial BatchNorm statistics, so folding them into the convs is actually exercised.
    k1, k2 = jax.random.split(jax.random.key(1))
    v["batch_stats"] = jax.tree.map(
        lambda a: a + jax.random.uniform(k1, a.shape, minval=0.1, maxval=0.5), v["batch_stats"])
    v["params"] = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(k2, a.shape), v["params"])
    x = np.asarray(jax.random.uniform(jax.random.key(2), (96,) + SHAPE))
    return net, v, x


@pytest.fixture(scope="module")
def int8_model(dscnn):
    net, v, x = dscnn
    return export.tflite(net, v, representative=x[:64])


class _Fn:
    """A stand-in net whose apply is an arbitrary function of the input."""

    name = "fn"
    input_shape = (8,)
    num_classes = 8

    def __init__(self, fn):
        self.fn = fn

    def apply(self, variables, x):
        return self.fn(x)


def test_int8_round_trip_matches_jax(dscnn, int8_model):
    net, v, x = dscnn
    assert int8_model[4:8] == b"TFL3"
    ref = np.asarray(jax.jit(net.apply)(v, x[64:]))
    got = export.tflm_run(int8_model, x[64:])
    assert got.shape == ref.shape
    # int8 error is a small fraction of the logits' spread, and top-1 mostly agrees.
    spread = ref.max() - ref.min()
    assert np.abs(got - ref).max() < 0.1 * spread
    assert np.mean(got.argmax(-1) == ref.argmax(-1)) >= 0.9


def test_int8_model_is_fully_integer_and_bn_folded(int8_model):
    raw = export.tflm_run(int8_model, np.zeros((1,) + SHAPE, np.float32), dequantize=False)
    assert raw.dtype == np.int8
    ops = export.model_ops(int8_model)
    assert "DEPTHWISE_CONV_2D" in ops and "CONV_2D" in ops
    # Eval-mode BatchNorm folded into the convs: no elementwise arithmetic left, no float ops.
    assert not {"MUL", "ADD", "SUB", "RSQRT", "DEQUANTIZE", "PAD", "SLICE"} & set(ops)


def test_float_export_matches_jax(dscnn):
    net, v, x = dscnn
    model = export.tflite(net, v, int8=False)
    got = export.tflm_run(model, x[:8])
    np.testing.assert_allclose(got, np.asarray(jax.jit(net.apply)(v, x[:8])), atol=1e-4)


def test_sliced_level_is_genuinely_smaller(dscnn, int8_model):
    net, v, x = dscnn
    half = subnets.slice_widths(net.graph, v, {g.name: g.size // 4 for g in net.graph.free})
    small = export.tflite(net, half, representative=x[:32])
    assert len(small) < len(int8_model)
    assert export.measure_arena(small) < export.measure_arena(int8_model)
    assert export.tflm_run(small, x[:2]).shape == (2, 5)


def test_measured_arena_is_tight(int8_model, tmp_path):
    from subnets.export.arena import _Prober

    arena = export.measure_arena(int8_model)
    assert arena % 16 == 0
    x = np.zeros((1,) + SHAPE, np.float32)
    assert export.tflm_run(int8_model, x, arena_size=arena).shape == (1, 5)
    with pytest.raises(export.ArenaError, match="B more"):
        export.tflm_run(int8_model, x, arena_size=arena - 32)
    # Independent probes in a fresh interpreter process: the minimum works, 32 B less does not.
    path = tmp_path / "m.tflite"
    path.write_bytes(int8_model)
    probe = _Prober(str(path))
    try:
        assert probe(arena) and not probe(arena - 32)
    finally:
        probe.close()


def test_op_tflm_lacks_fails_export_naming_it():
    x = np.random.default_rng(0).random((8, 8), dtype=np.float32)
    net = _Fn(lambda x: jnp.arctan2(x, x + 1.0))
    with pytest.raises(export.UnsupportedOpError, match="ATAN2") as err:
        export.tflite(net, {}, representative=x)
    assert err.value.ops == ["ATAN2"]
    # The interpreter agrees with the static op list: running it fails the same way.
    model = export.tflite(net, {}, int8=False, check=False)
    from subnets.export.tflm import _interpreter

    with pytest.raises(export.UnsupportedOpError, match="ATAN2"):
        _interpreter(model, 1 << 20)
    with pytest.raises(export.UnsupportedOpError, match="ATAN2"):
        export.tflm_run(model, x)


def test_op_the_converter_cannot_lower_is_named():
    with pytest.raises(export.ConversionError, match="sort"):
        export.tflite(_Fn(lambda x: jnp.sort(x, axis=-1)), {}, int8=False)


def test_bad_inputs_are_named(dscnn, int8_model):
    net, v, x = dscnn
    with pytest.raises(ValueError, match="representative"):
        export.tflite(net, v)
    with pytest.raises(ValueError, match=r"representative has shape \(4, 8, 8, 1\)"):
        export.tflite(net, v, representative=np.zeros((4, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        export.tflite(net, v, representative=np.full((2,) + SHAPE, np.nan, np.float32))
    with pytest.raises(ValueError, match=r"takes \(N,\) \+ \(16, 8, 1\)"):
        export.tflm_run(int8_model, np.zeros((2, 8, 16, 1), np.float32))
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        export.model_ops(b"\x00" * 32)


def test_tflm_op_list_names_real_builtin_ops():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    builtins = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")}
    assert export.TFLM_OPS <= builtins
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= export.TFLM_OPS
