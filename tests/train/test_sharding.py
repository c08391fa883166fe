"""Mesh / sharding helpers."""

import jax
import numpy as np
import pytest

from fastxai_jax.train.sharding import data_mesh, replicate, shard_batch


def test_shard_batch_splits_leading_axis():
    mesh = data_mesh()
    assert mesh.axis_names == ("data",) and mesh.devices.size == jax.device_count()
    batch = {"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "y": np.arange(16)}
    sharded = shard_batch(batch, mesh)
    shards = sharded["x"].addressable_shards
    assert len(shards) == 8 and shards[0].data.shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(sharded["x"]), batch["x"])
    rep = replicate({"w": np.ones((4, 4))}, mesh)
    assert all(s.data.shape == (4, 4) for s in rep["w"].addressable_shards)


def test_shard_batch_errors():
    mesh = data_mesh(4)
    with pytest.raises(ValueError, match="batch size 6.*device count 4"):
        shard_batch({"x": np.zeros((6, 2))}, mesh)
    with pytest.raises(ValueError, match="num_devices"):
        data_mesh(10_000)
