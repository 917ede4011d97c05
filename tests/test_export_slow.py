"""The export issue's must-show runs: every level of two trained DS-CNN families, 1,000 samples.

- ds-cnn-s on KWS-shaped 49x10x1 input: SYNTHETIC data (Speech Commands is not available
  offline), 12 classes of template + noise.
- vision-ds-cnn on Fashion-MNIST (real IDX files).
Both are trained briefly as nested families, then every level is exported to full int8 and run
in the TFLite-Micro interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("tensorflow")
pytest.importorskip("tflite_micro")

_spec = importlib.util.spec_from_file_location(
    "bench_export", Path(__file__).parent.parent / "benchmarks" / "export.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # dataclasses resolve annotations through sys.modules
_spec.loader.exec_module(bench)

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def _check(result: dict, chance: float) -> None:
    print(json.dumps(result))  # the figures, with pytest -s
    levels = result["levels"]
    assert len(levels) == len(FRACTIONS)
    for row in levels:
        assert row["samples"] == 1000
        assert row["top1_agreement"] >= 0.98, row
        assert abs(row["accuracy_drop"]) <= 0.02, row
    # Non-trivial models, and genuinely smaller levels.
    assert levels[-1]["jax_float_accuracy"] > 3 * chance
    assert result["bytes_shrink"] and result["arena_shrink"]
    assert result["fits_nano33ble"]


def test_kws_dscnn_s_every_level_agrees_in_tflm():
    x, y = bench.kws_synthetic(4000, key=jax.random.key(1))
    xe, ye = bench.kws_synthetic(1000, key=jax.random.key(2))
    result = bench.run_model("ds-cnn-s", x, y, xe, ye, x[:200], fractions=FRACTIONS,
                             steps=300, key=jax.random.key(3), progress=False)
    _check(result, 1 / 12)


def test_vision_dscnn_fashion_mnist_every_level_agrees_in_tflm():
    from subnets import data

    try:
        x, y = data.load("fashion_mnist", "train")
        xe, ye = data.load("fashion_mnist", "test")
    except (FileNotFoundError, OSError) as e:
        pytest.skip(f"Fashion-MNIST not available offline: {e}")
    rep = x[np.random.default_rng(0).choice(len(x), 200, replace=False)]
    result = bench.run_model("vision-ds-cnn", x, y, xe[:1000], ye[:1000], rep,
                             fractions=FRACTIONS, steps=600, key=jax.random.key(4),
                             progress=False)
    _check(result, 1 / 10)
