"""The tiny hand-written target that the metric and evaluation tests share."""

import jax
import jax.numpy as jnp

HEIGHT, WIDTH, CHANNELS, CLASSES = 8, 8, 3, 5


def tiny_apply(params, x):
    """A two-layer tanh network on the flattened image: ``[B, 8, 8, 3] -> [B, 5]``."""
    hidden = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"])
    return 3.0 * hidden @ params["w2"]


def tiny_params(key_hidden, key_out):
    """``tiny_apply``'s weights: ``w1 [192, 16]`` (scaled 0.3) and ``w2 [16, 5]``, normal."""
    return {
        "w1": jax.random.normal(key_hidden, (HEIGHT * WIDTH * CHANNELS, 16)) * 0.3,
        "w2": jax.random.normal(key_out, (16, CLASSES)),
    }
