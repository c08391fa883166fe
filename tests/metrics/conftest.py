"""Tiny hand-written models and inputs shared by the metric tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

HEIGHT, WIDTH, CHANNELS, CLASSES = 8, 8, 3, 5


def tiny_apply(params, x):
    """A two-layer tanh network on the flattened image: ``[B, 8, 8, 3] -> [B, 5]``."""
    hidden = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"])
    return 3.0 * hidden @ params["w2"]


@pytest.fixture(scope="session")
def tiny():
    keys = jax.random.split(jax.random.key(42), 4)
    params = {
        "w1": jax.random.normal(keys[0], (HEIGHT * WIDTH * CHANNELS, 16)) * 0.3,
        "w2": jax.random.normal(keys[1], (16, CLASSES)),
    }
    x = jax.random.uniform(keys[2], (2, HEIGHT, WIDTH, CHANNELS))
    # Quantised maps so that ties occur and the tie-breaking rule is exercised.
    attribution = jnp.round(jax.random.normal(keys[3], (2, HEIGHT, WIDTH)) * 4) / 4
    return tiny_apply, params, x, attribution


def softmax_np(logits):
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
