"""``subnets.ops.conv``: every lowering form is ``lax.conv_general_dilated`` and its gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from subnets import ops

DN = ("NHWC", "HWIO", "NHWC")


@pytest.fixture
def forms():
    saved = dict(ops.FORMS)
    yield ops.FORMS
    ops.FORMS.update(saved)


def _pair(x, k, strides, padding, groups):
    def ref(x, k):
        return lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=DN,
                                        feature_group_count=groups)

    def new(x, k):
        return ops.conv(x, k, strides, padding, dimension_numbers=DN,
                        feature_group_count=groups)

    return ref, new


def _check(x, k, strides, padding, groups):
    ref, new = _pair(x, k, strides, padding, groups)
    np.testing.assert_allclose(new(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
    w = jax.random.normal(jax.random.key(9), ref(x, k).shape)

    def grads(fn):
        return jax.grad(lambda x, k: jnp.sum(w * fn(x, k)), argnums=(0, 1))(x, k)

    for a, b in zip(grads(new), grads(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(["pointwise", "depthwise", "spatial"]),
       c=st.integers(1, 5), o=st.integers(1, 4), k=st.sampled_from([1, 2, 3]),
       s=st.sampled_from([1, 2]), h=st.integers(3, 7), w=st.integers(3, 7),
       pad=st.sampled_from(["SAME", "VALID", "explicit"]))
def test_every_form_equals_the_convolution_and_its_gradient(kind, c, o, k, s, h, w, pad):
    saved = dict(ops.FORMS)
    try:
        ops.FORMS.update({"spatial": kind == "spatial"})
        rng = np.random.default_rng(c * 100 + o * 10 + k)
        groups = c if kind == "depthwise" else 1
        kk = 1 if kind == "pointwise" else k
        out = c if kind == "depthwise" else o
        x = rng.normal(size=(2, h, w, c)).astype(np.float32)
        kernel = rng.normal(size=(kk, kk, c // groups, out)).astype(np.float32)
        padding = ((1, 0), (0, 1)) if pad == "explicit" and kind != "pointwise" else (
            "VALID" if pad == "explicit" else pad)
        _check(x, kernel, (s, s), padding, groups)
    finally:
        ops.FORMS.clear()
        ops.FORMS.update(saved)


def test_primal_stays_one_convolution(forms):
    """What tracing and TFLite export read: the grouped conv, not the shifted products."""
    forms["spatial"] = True
    x = jnp.ones((1, 6, 6, 4))
    for k, groups in ((jnp.ones((3, 3, 1, 4)), 4), (jnp.ones((3, 3, 4, 2)), 1),
                      (jnp.ones((1, 1, 4, 2)), 1)):
        jaxpr = jax.make_jaxpr(lambda x, k, g=groups: ops.conv(
            x, k, (1, 1), "SAME" if k.shape[0] > 1 else "VALID", dimension_numbers=DN,
            feature_group_count=g))(x, k)
        text = str(jaxpr)
        assert "conv_general_dilated" in text
        assert f"feature_group_count={groups}" in text
        assert "mul" not in text.replace("custom_vjp_call", "")


def test_forms_can_be_switched_off(forms):
    forms.update({"pointwise": False, "depthwise": False, "spatial": False})
    x = jnp.ones((1, 5, 5, 3))
    k = jnp.ones((3, 3, 1, 3))
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(ops.conv(
        x, k, (1, 1), "SAME", dimension_numbers=DN, feature_group_count=3))))(x))
    assert "custom_vjp" not in jaxpr
