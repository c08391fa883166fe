"""The sharded explain-and-score step equals its single-device run (8 simulated devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _sweep_helpers import tiny_cnn
from jax.sharding import Mesh

import fastxai_jax as fx
from fastxai_jax.data.groundtruth import make_benchmark
from fastxai_jax.sweep.step import make_step, method_key

METRICS = [("insertion_deletion", {"step_size": 24}), ("sparseness", {})]
CASES = [
    ("saliency", {}),
    ("ig", {"num_steps": 8}),
    ("mfaba", {}),
    ("rise", {"num_masks": 16, "chunk_size": 16}),
    # DAX: one fit per image, vmapped within a device (~40 s of compile per mesh).
    pytest.param("dax", {"num_samples": 8, "epochs": 1, "batch_size": 4}, marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def setup():
    bench = make_benchmark(8, seed=3, image_size=24)
    apply_fn, variables, _ = tiny_cnn(bench["images"])
    images, labels = jnp.asarray(bench["images"]), jnp.asarray(bench["labels"])
    return apply_fn, variables, images, labels


_RESULTS = {}  # (method, devices) -> outputs on the 8 images, shared by tests (one compile each)


def _run(setup, method, options, num_devices, index):
    cache_key = (method, num_devices, tuple(np.asarray(index).tolist()))
    if cache_key not in _RESULTS:
        _RESULTS[cache_key] = _compute(setup, method, options, num_devices, index)
    return _RESULTS[cache_key]


def _compute(setup, method, options, num_devices, index):
    apply_fn, variables, images, labels = setup
    assert len(jax.devices()) == 8, "conftest must provide 8 simulated CPU devices"
    mesh = Mesh(np.asarray(jax.devices()[:num_devices]), ("data",))
    step = make_step(apply_fn, method, options, METRICS, mesh)
    attribution, columns = step(variables, images, labels, index, method_key(0, method))
    return np.asarray(attribution), {k: np.asarray(v) for k, v in columns.items()}


@pytest.mark.parametrize("method,options", CASES)
def test_sharded_equals_single_device(setup, method, options):
    index = jnp.arange(8, dtype=jnp.int32)
    single, single_cols = _run(setup, method, options, 1, index)
    sharded, sharded_cols = _run(setup, method, options, 8, index)
    assert single.shape == (8, 24, 24)
    np.testing.assert_allclose(sharded, single, atol=1e-5, rtol=1e-5)
    assert set(sharded_cols) == {"label", "target", "predicted", "insertion_auc", "deletion_auc",
                                 "sparseness"}  # fmt: skip
    for name, values in single_cols.items():
        np.testing.assert_allclose(sharded_cols[name], values, atol=1e-5, err_msg=name)
    # Maps are not all zero, and differ between images (the step is per image).
    assert np.abs(single).max() > 0 and np.abs(single[0] - single[1]).max() > 0


def test_step_matches_the_library_calls(setup):
    """Per-image vmap of a deterministic method = the batched library call; scores likewise."""
    apply_fn, variables, images, _ = setup
    attribution, columns = _run(setup, "ig", {"num_steps": 8}, 8, jnp.arange(8, dtype=jnp.int32))
    target = jnp.argmax(apply_fn(variables, images), axis=-1)
    direct = fx.integrated_gradients(apply_fn, variables, images, target, num_steps=8)
    np.testing.assert_allclose(attribution, np.asarray(direct), atol=1e-5, rtol=1e-5)
    curves = fx.insertion_deletion(apply_fn, variables, images, direct, target, step_size=24)
    np.testing.assert_allclose(columns["insertion_auc"], curves["insertion"].auc, atol=1e-5)
    np.testing.assert_allclose(columns["deletion_auc"], curves["deletion"].auc, atol=1e-5)
    np.testing.assert_array_equal(columns["target"], np.asarray(target))


def test_keys_follow_the_global_index(setup):
    """RISE's map of an image depends on its global index, not on its batch slot."""
    index = jnp.arange(8, dtype=jnp.int32)
    maps, _ = _run(setup, "rise", {"num_masks": 16, "chunk_size": 16}, 8, index)
    apply_fn, variables, images, labels = setup
    mesh = Mesh(np.asarray(jax.devices()[:4]), ("data",))
    step = make_step(apply_fn, "rise", {"num_masks": 16, "chunk_size": 16}, [], mesh)
    order = np.asarray([5, 2, 7, 0])  # a different batch of 4, in another order
    half, _ = step(variables, images[order], labels[order], index[order], method_key(0, "rise"))
    np.testing.assert_allclose(np.asarray(half), maps[order], atol=1e-5, rtol=1e-5)
    other_keys, _ = step(variables, images[order], labels[order], index[order] + 1,
                         method_key(0, "rise"))  # fmt: skip
    assert np.abs(np.asarray(other_keys) - maps[order]).max() > 1e-3


def test_global_batch_on_one_process():
    from fastxai_jax.train.sharding import global_batch, global_mesh, process_rows

    mesh = global_mesh()
    assert process_rows(16, mesh) == (0, 16)  # one process feeds every row
    with pytest.raises(ValueError, match="not divisible by the device count 8"):
        process_rows(12, mesh)
    local = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    batch = global_batch({"x": local}, mesh, 16)["x"]
    np.testing.assert_array_equal(np.asarray(batch), local)
    assert [s.data.shape for s in batch.addressable_shards] == [(2, 3)] * 8
