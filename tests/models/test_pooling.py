"""The reshape/strided-slice max pool equals flax's reduce_window one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.models.pooling import max_pool

CASES = [
    ((2, 2), (2, 2), "VALID"),
    ((8, 8), (8, 8), "VALID"),
    ((3, 3), (2, 2), ((1, 1), (1, 1))),  # ResNet stem
    ((3, 3), (2, 2), "SAME"),
    ((3, 3), (1, 1), "SAME"),
    ((2, 3), (2, 1), "VALID"),
]


@pytest.mark.parametrize("window,strides,padding", CASES)
@pytest.mark.parametrize("size", [16, 17])
def test_forward_and_gradient_equal_flax(window, strides, padding, size):
    # Continuous random input: no tied maxima, so the gradients must agree exactly.
    x = jax.random.normal(jax.random.key(size), (2, size, size + 2, 3))
    cotangent = jax.random.normal(jax.random.key(1), nn.max_pool(x, window, strides, padding).shape)
    ours = max_pool(x, window, strides, padding)
    ref = nn.max_pool(x, window, strides, padding)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))

    def grad_of(pool):
        return jax.grad(lambda x: jnp.sum(pool(x, window, strides, padding) * cotangent))(x)

    np.testing.assert_allclose(grad_of(max_pool), grad_of(nn.max_pool), rtol=0, atol=1e-6)


def test_tied_maxima_split_the_gradient():
    # One 2×2 window of four equal values: each gets a quarter (flax sends it all to one).
    x = jnp.ones((1, 2, 2, 1))
    grad = jax.grad(lambda x: max_pool(x, 2).sum())(x)
    np.testing.assert_allclose(np.asarray(grad).ravel(), [0.25] * 4)
    flax_grad = jax.grad(lambda x: nn.max_pool(x, (2, 2), (2, 2)).sum())(x)
    assert float(flax_grad.sum()) == pytest.approx(float(grad.sum()))


def test_relu_network_input_gradient_unchanged_by_zero_ties():
    # After a ReLU, the tied maxima are zeros whose ReLU gradient is zero.
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4)) - 1.0

    def net(pool):
        return lambda x: jnp.sum(pool(jax.nn.relu(x), (2, 2), (2, 2)) ** 2)

    np.testing.assert_allclose(
        jax.grad(net(max_pool))(x), jax.grad(net(nn.max_pool))(x), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"window": 0}, "window"),
        ({"window": (2, 2, 2)}, "window"),
        ({"window": 2, "padding": "FULL"}, "padding"),
        ({"window": 40}, "larger"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        max_pool(jnp.zeros((1, 8, 8, 1)), **kwargs)
    with pytest.raises(ValueError, match="x must be"):
        max_pool(jnp.zeros((8, 8, 1)), 2)
