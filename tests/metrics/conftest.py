"""Tiny hand-written models and inputs shared by the metric tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tiny_model import CHANNELS, HEIGHT, WIDTH, tiny_apply, tiny_params


@pytest.fixture(scope="session")
def tiny():
    keys = jax.random.split(jax.random.key(42), 4)
    params = tiny_params(keys[0], keys[1])
    x = jax.random.uniform(keys[2], (2, HEIGHT, WIDTH, CHANNELS))
    # Quantised maps so that ties occur and the tie-breaking rule is exercised.
    attribution = jnp.round(jax.random.normal(keys[3], (2, HEIGHT, WIDTH)) * 4) / 4
    return tiny_apply, params, x, attribution


def softmax_np(logits):
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
