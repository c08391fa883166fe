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


@pytest.mark.parametrize("window,strides,padding", [c for c in CASES if c[2] != "SAME"])
def test_tied_maxima_route_to_the_first_as_torch(window, strides, padding):
    # Quantised input: many tied maxima, positive and negative. torch's max_pool2d
    # sends each window's gradient to its first maximum in row-major order (torch
    # has no SAME padding, so those cases have no reference).
    import torch

    x = np.round(np.asarray(jax.random.normal(jax.random.key(3), (2, 12, 11, 3))) * 2) / 2
    out = max_pool(jnp.asarray(x), window, strides, padding)
    cotangent = np.asarray(jax.random.normal(jax.random.key(4), out.shape))
    grad = jax.grad(lambda v: jnp.sum(max_pool(v, window, strides, padding) * cotangent))(
        jnp.asarray(x)
    )
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    pads = (0, 0) if padding == "VALID" else tuple(p[0] for p in padding)
    pooled = torch.nn.functional.max_pool2d(xt, window, strides, pads)
    np.testing.assert_array_equal(np.asarray(out), pooled.detach().numpy().transpose(0, 2, 3, 1))
    (pooled * torch.tensor(cotangent.transpose(0, 3, 1, 2))).sum().backward()
    np.testing.assert_allclose(
        np.asarray(grad), xt.grad.numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-6
    )


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
