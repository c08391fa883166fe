import jax
import jax.numpy as jnp
import pytest


def tiny_apply(params, x):
    """A two-layer tanh network on the flattened image: ``[B, 8, 8, 3] -> [B, 5]``."""
    hidden = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"])
    return 3.0 * hidden @ params["w2"]


@pytest.fixture(scope="session")
def tiny_eval():
    """``(apply_fn, params, x [4, 8, 8, 3], masks [4, 8, 8])``."""
    keys = jax.random.split(jax.random.key(7), 3)
    params = {
        "w1": jax.random.normal(keys[0], (8 * 8 * 3, 16)) * 0.3,
        "w2": jax.random.normal(keys[1], (16, 5)),
    }
    x = jax.random.uniform(keys[2], (4, 8, 8, 3))
    masks = jnp.zeros((4, 8, 8), bool).at[:, 2:5, 3:6].set(True)
    return tiny_apply, params, x, masks
