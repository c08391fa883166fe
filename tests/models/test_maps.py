"""The shared map operations: nearest upsampling and min-max normalisation."""

import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers import _masks
from fastxai_jax.metrics import localisation
from fastxai_jax.models import dax_nets, maps


def test_upsample_nearest_is_a_kronecker_product():
    grid = np.arange(12.0).reshape(2, 2, 3)
    got = maps.upsample_nearest(jnp.asarray(grid), (4, 6))
    expected = np.stack([np.kron(g, np.ones((2, 2))) for g in grid])
    np.testing.assert_array_equal(np.asarray(got), expected)
    assert _masks.upsample_nearest is maps.upsample_nearest  # one implementation
    with pytest.raises(ValueError, match="does not divide"):
        maps.upsample_nearest(jnp.asarray(grid), (5, 6))


def test_minmax_normalise_modes():
    values = np.array([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]])
    floor = np.asarray(maps.minmax_normalise(jnp.asarray(values), (1, 2)))
    np.testing.assert_allclose(floor[0], [[0.0, 0.5], [0.25, 1.0]])
    np.testing.assert_array_equal(floor[1], 0.0)  # a constant map becomes 0
    add = np.asarray(maps.minmax_normalise(jnp.asarray(values), (1, 2), eps=1.0, eps_mode="add"))
    np.testing.assert_allclose(add[0], [[0.0, 0.4], [0.2, 0.8]])  # (v − 1) / (4 + 1)
    np.testing.assert_array_equal(
        np.asarray(localisation.minmax_normalise(jnp.asarray(values))), floor
    )
    batch = dax_nets.minmax_normalise(jnp.asarray(values), axes=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(batch), (values - 1.0) / (4.0 + 1e-8), rtol=1e-6)
    with pytest.raises(ValueError, match="eps_mode"):
        maps.minmax_normalise(jnp.asarray(values), eps_mode="clip")
