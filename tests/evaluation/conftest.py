import jax
import jax.numpy as jnp
import pytest
from _tiny_model import tiny_apply, tiny_params


@pytest.fixture(scope="session")
def tiny_eval():
    """``(apply_fn, params, x [4, 8, 8, 3], masks [4, 8, 8])``."""
    keys = jax.random.split(jax.random.key(7), 3)
    x = jax.random.uniform(keys[2], (4, 8, 8, 3))
    masks = jnp.zeros((4, 8, 8), bool).at[:, 2:5, 3:6].set(True)
    return tiny_apply, tiny_params(keys[0], keys[1]), x, masks
