"""Own (non-zoo) models export to int8 TFLite with no glue: full and width-sliced variables."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _own_models import batch, dw_cnn, randomize, res_mlp

import subnets

pytest.importorskip("tensorflow")


@pytest.mark.slow
@pytest.mark.parametrize("make", [res_mlp, dw_cnn], ids=["res_mlp", "dw_cnn"])
def test_int8_tflite_of_own_models_agrees_with_jax(make):
    from subnets.export import tflite
    from subnets.export.tflm import tflm_run

    model = make()
    v = randomize(model.init(jax.random.key(0)))
    small = subnets.slice_widths(model.graph, v,
                                 {g.name: max(1, g.size // 2) for g in model.graph.free})
    rep = batch(model, n=64, seed=7)
    sizes = []
    for variables in (v, small):
        flat = tflite(model, variables, representative=rep)
        assert flat[4:8] == b"TFL3"
        got = tflm_run(flat, rep[:16])
        want = np.asarray(model.apply(variables, rep[:16]))
        assert got.shape == want.shape
        assert np.mean(got.argmax(-1) == want.argmax(-1)) >= 0.75
        sizes.append(len(flat))
    assert sizes[1] < sizes[0]
