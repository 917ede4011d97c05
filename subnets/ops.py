"""Convolution lowering that XLA's CPU backend runs faster, same function and parameters.

:func:`conv` is a drop-in ``conv_general_dilated`` for ``flax.linen.Conv``
(``nn.Conv(..., conv_general_dilated=ops.conv)``). A 1x1 convolution over NHWC maps (stride
``s``, no dilation, one feature group) stays a convolution in the primal program (what
inference runs and what ``subnets.graph.trace`` reads), but under differentiation its forward
and backward are a strided slice and matrix products (a ``jax.custom_vjp``), which XLA:CPU
runs as single GEMMs where its convolution-gradient kernels are slow. A depthwise convolution
(``feature_group_count`` = input channels) on the CPU keeps its grouped-conv primal (what
TFLite export needs) and differentiates through shifted elementwise products. Everything
else goes to ``lax.conv_general_dilated`` unchanged (a k x k form whose kernel gradient is
GEMMs exists, ``FORMS["spatial"]``, off: it measured no faster). ``subnets.graph.run`` and the
zoo's convolutions use :func:`conv`. Measured (``benchmarks/train_speed.py``): the full-width
cPreResNet20 gradient 1.79x faster with the 1x1 form, ``graph.run``'s vision-ds-cnn gradient
1.61x with both forms. Kernels keep their HWIO shapes and names, so checkpoints, channel graphs
and export are untouched. No XLA flag is set (``benchmarks/cpu_kernels.py`` compares them).

Example:
    >>> import jax, numpy as np
    >>> x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32")
    >>> k = np.random.default_rng(1).normal(size=(1, 1, 3, 4)).astype("float32")
    >>> dn = jax.lax.conv_dimension_numbers(x.shape, k.shape, ("NHWC", "HWIO", "NHWC"))
    >>> ref = jax.lax.conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=dn)
    >>> bool(np.allclose(conv(x, k, (2, 2), "SAME", dimension_numbers=dn), ref, atol=1e-5))
    True

References:
    XLA CPU backend: dot and convolution emitters (``xla/service/cpu``); Chellapilla et al.,
    High Performance Convolutional Neural Networks for Document Processing (2006) for
    convolution as matrix multiplication.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _nhwc(dimension_numbers: Any) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, tuple) and len(dimension_numbers) == 3 and all(
            isinstance(d, str) for d in dimension_numbers):
        return tuple(dimension_numbers) == ("NHWC", "HWIO", "NHWC")
    try:
        specs = (tuple(dimension_numbers.lhs_spec), tuple(dimension_numbers.rhs_spec),
                 tuple(dimension_numbers.out_spec))
    except AttributeError:
        return False
    return specs == _NHWC


def _unit(v: Any) -> bool:
    return v is None or all(int(d) == 1 for d in v)


def _no_padding(padding: Any) -> bool:
    if isinstance(padding, str):
        return padding in ("SAME", "VALID")
    return all(tuple(p) == (0, 0) for p in padding)


def _pointwise(strides: tuple[int, int], precision: Any):
    """A 1x1 convolution whose primal is the convolution and whose training path is GEMMs."""
    sh, sw = strides
    dn = ("NHWC", "HWIO", "NHWC")

    def sub(x):
        return x if (sh, sw) == (1, 1) else x[:, ::sh, ::sw, :]

    @jax.custom_vjp
    def f(x, k):
        # What tracers (subnets.graph.trace) and plain inference see: the convolution itself.
        return lax.conv_general_dilated(x, k.astype(x.dtype), strides, "VALID",
                                        dimension_numbers=dn, precision=precision)

    def fwd(x, k):
        xs = sub(x)
        k2 = k.reshape(k.shape[2:]).astype(x.dtype)
        y = lax.dot(xs.reshape(-1, xs.shape[-1]), k2, precision=precision)
        return y.reshape(xs.shape[:3] + (k2.shape[1],)), (xs, k, x.shape)

    def bwd(res, g):
        xs, k, shape = res
        k2 = k.reshape(k.shape[2:]).astype(g.dtype)
        g2 = g.reshape(-1, g.shape[-1])
        dxs = lax.dot(g2, k2.T, precision=precision).reshape(xs.shape)
        dk = lax.dot(xs.reshape(-1, xs.shape[-1]).T, g2, precision=precision)
        if (sh, sw) != (1, 1):  # the gradient of a strided slice: zeros between the samples
            hi_h = shape[1] - ((xs.shape[1] - 1) * sh + 1)
            hi_w = shape[2] - ((xs.shape[2] - 1) * sw + 1)
            dxs = lax.pad(dxs, jnp.zeros((), dxs.dtype),
                          ((0, 0, 0), (0, hi_h, sh - 1), (0, hi_w, sw - 1), (0, 0, 0)))
        return dxs, dk.reshape(k.shape).astype(k.dtype)

    f.defvjp(fwd, bwd)
    return f


# Which lowerings :func:`conv` uses (``benchmarks/train_speed.py`` toggles them to measure each
# against the plain convolution in one run). Every form computes the same function.
FORMS: dict[str, bool] = {"pointwise": True, "depthwise": True, "spatial": False}


def _pads(x_shape, k_shape, strides, padding) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        return tuple(lax.padtype_to_pads(x_shape[1:3], k_shape[:2], strides, padding))
    return tuple((int(a), int(b)) for a, b in padding)


def _taps(x, k_shape, strides, pads, out_hw):
    """The ``kh * kw`` strided windows of the padded input, each ``(N, Ho, Wo, C)``."""
    (sh, sw), (ho, wo) = strides, out_hw
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    return [[xp[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]
             for j in range(k_shape[1])] for i in range(k_shape[0])]


def _shifted_depthwise(x, k, strides, pads):
    """A depthwise convolution as ``kh * kw`` shifted, scaled copies of the input."""
    ho = (x.shape[1] + sum(pads[0]) - k.shape[0]) // strides[0] + 1
    wo = (x.shape[2] + sum(pads[1]) - k.shape[1]) // strides[1] + 1
    taps = _taps(x, k.shape, strides, pads, (ho, wo))
    y = None
    for i, row in enumerate(taps):
        for j, tap in enumerate(row):
            t = tap * k[i, j, 0]
            y = t if y is None else y + t
    return y


def _depthwise(strides, pads, precision):
    """Depthwise: the grouped convolution as primal (what TFLite export and tracing see),
    differentiated through shifted elementwise products (XLA:CPU's grouped-convolution
    gradients are several times slower)."""
    dn = ("NHWC", "HWIO", "NHWC")

    @jax.custom_vjp
    def f(x, k):
        return lax.conv_general_dilated(x, k.astype(x.dtype), strides, pads, dimension_numbers=dn,
                                        feature_group_count=x.shape[-1], precision=precision)

    def fwd(x, k):
        y, vjp = jax.vjp(lambda x, k: _shifted_depthwise(x, k.astype(x.dtype), strides, pads),
                         x, k)
        return y, vjp

    def bwd(vjp, g):
        return vjp(g)

    f.defvjp(fwd, bwd)
    return f


def _spatial(strides, pads, precision):
    """A k x k convolution: the convolution forward; backward the input gradient as XLA's
    transposed convolution and the kernel gradient as ``kh * kw`` GEMMs over the batch."""
    dn = ("NHWC", "HWIO", "NHWC")

    def c(x, k):
        return lax.conv_general_dilated(x, k.astype(x.dtype), strides, pads, dimension_numbers=dn,
                                        precision=precision)

    @jax.custom_vjp
    def f(x, k):
        return c(x, k)

    def fwd(x, k):
        return c(x, k), (x, k)

    def bwd(res, g):
        x, k = res
        _, vjp_x = jax.vjp(lambda x: c(x, k), x)
        dx, = vjp_x(g)
        taps = _taps(x, k.shape, strides, pads, g.shape[1:3])
        g2 = g.reshape(-1, g.shape[-1])
        dk = jnp.stack([jnp.stack([lax.dot(t.reshape(-1, t.shape[-1]).T, g2, precision=precision)
                                   for t in row]) for row in taps])
        return dx, dk.astype(k.dtype)

    f.defvjp(fwd, bwd)
    return f


def conv(lhs: jax.Array, rhs: jax.Array, window_strides: Any, padding: Any, *,
         lhs_dilation: Any = None, rhs_dilation: Any = None, dimension_numbers: Any = None,
         feature_group_count: int = 1, precision: Any = None, **kwargs: Any) -> jax.Array:
    """``lax.conv_general_dilated``; NHWC convolutions differentiate through faster forms.

    1x1: GEMMs; depthwise (``feature_group_count`` = input channels) on the CPU: shifted
    elementwise products; everything else (and every primal) is the convolution itself.
    """
    plain = (lhs.ndim == 4 and _unit(lhs_dilation) and _unit(rhs_dilation)
             and _nhwc(dimension_numbers) and not kwargs)
    strides = tuple(int(s) for s in window_strides) if plain else ()
    if plain and feature_group_count == 1 and rhs.shape[:2] == (1, 1) and _no_padding(padding) \
            and FORMS["pointwise"]:
        return _pointwise(strides, precision)(lhs, rhs)
    if plain and feature_group_count > 1 and feature_group_count == lhs.shape[-1] \
            and rhs.shape[2] == 1 and rhs.shape[3] == lhs.shape[-1] and FORMS["depthwise"] \
            and jax.default_backend() == "cpu":
        pads = _pads(lhs.shape, rhs.shape, strides, padding)
        return _depthwise(strides, pads, precision)(lhs, rhs)
    if plain and feature_group_count == 1 and FORMS["spatial"]:
        pads = _pads(lhs.shape, rhs.shape, strides, padding)
        return _spatial(strides, pads, precision)(lhs, rhs)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision, **kwargs)
