"""depthwise_conv / DepthwiseConv equal XLA's grouped convolution."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.models.depthwise import DepthwiseConv, depthwise_conv

DIMS = ("NHWC", "HWIO", "NHWC")


def _grouped(x, kernel, strides, padding):
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        strides,
        padding,
        dimension_numbers=DIMS,
        feature_group_count=x.shape[-1],
        precision=jax.lax.Precision.HIGHEST,
    )


CASES = [
    # (size, channels, kernel, stride, padding)
    (9, 4, 3, 1, ((1, 1), (1, 1))),
    (10, 3, 3, 2, ((1, 1), (1, 1))),
    (11, 5, 5, 2, ((2, 2), (2, 2))),
    (8, 2, 5, 1, ((2, 2), (2, 2))),
    (7, 3, 3, 1, ((0, 0), (0, 0))),
    (12, 2, 3, 2, ((0, 1), (1, 0))),  # asymmetric (TF "SAME"-style)
]


@pytest.mark.parametrize("size,channels,k,stride,padding", CASES)
def test_values_and_gradients_equal_grouped_conv(size, channels, k, stride, padding):
    rng = np.random.default_rng(size * 10 + k)
    x = jnp.asarray(rng.normal(size=(2, size, size + 1, channels)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, k, 1, channels)), jnp.float32)
    strides = (stride, stride)
    ours = depthwise_conv(x, kernel, strides, padding)
    ref = _grouped(x, kernel, strides, padding)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
    grads = [
        jax.grad(
            lambda x, w, fn=fn: jnp.sum(fn(x, w, strides, padding) * cotangent), argnums=(0, 1)
        )(x, kernel)
        for fn in (depthwise_conv, _grouped)
    ]
    for ours_g, ref_g in zip(*grads, strict=True):
        np.testing.assert_allclose(ours_g, ref_g, rtol=1e-4, atol=1e-4)


def test_module_matches_flax_grouped_conv_with_the_same_params():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 6)), jnp.float32)
    padding = ((1, 1), (1, 1))
    flax_conv = nn.Conv(
        6, (3, 3), strides=(2, 2), padding=padding, feature_group_count=6, use_bias=True
    )
    ours = DepthwiseConv((3, 3), strides=(2, 2), padding=padding, use_bias=True)
    params = flax_conv.init(jax.random.key(0), x)
    own = ours.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, own) == jax.tree.map(jnp.shape, params)
    params = jax.tree.map(lambda p: p + 0.1, params)  # non-zero bias
    np.testing.assert_allclose(
        ours.apply(params, x), flax_conv.apply(params, x), rtol=1e-5, atol=1e-5
    )


def test_bad_arguments_name_the_problem():
    x = jnp.zeros((1, 5, 5, 3))
    with pytest.raises(ValueError, match="kernel"):
        depthwise_conv(x, jnp.zeros((3, 3, 1, 4)))
    with pytest.raises(ValueError, match="x must be"):
        depthwise_conv(jnp.zeros((5, 5, 3)), jnp.zeros((3, 3, 1, 3)))
    with pytest.raises(ValueError, match="larger than"):
        depthwise_conv(x, jnp.zeros((7, 7, 1, 3)))
