"""Preprocessing (resize + centre crop, boxes -> mask) and numpy batching."""

import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.data import (
    ArraySource,
    batch_indices,
    boxes_to_mask,
    iterate_batches,
    make_preprocess,
    normalise_np,
    resize_and_center_crop,
    stack_examples,
)
from fastxai_jax.models import normalise_images


def test_resize_and_center_crop_geometry():
    # 40 x 80 image whose left half is dark and right half bright.
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 40:] = 255
    out, transform = resize_and_center_crop(image, 20, crop_fraction=1.0)
    assert out.shape == (20, 20, 3) and out.dtype == np.float32
    # Resized to 20 x 40, crop columns 10..29: the edge sits at crop column 10.
    np.testing.assert_allclose(out[:, :9], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[:, 11:], 1.0, atol=1e-6)
    assert transform.scale == pytest.approx(0.5) and transform.offset_x == 10.0
    # crop_fraction 0.5: shorter side resized to 40, i.e. no resize; centre crop.
    out, transform = resize_and_center_crop(image, 20, crop_fraction=0.5)
    assert transform.offset_y == 10.0 and transform.offset_x == 30.0
    np.testing.assert_allclose(out[:, :10], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[:, 10:], 1.0, atol=1e-6)


def test_resize_grey_and_float_inputs():
    grey = np.full((30, 30), 128, np.uint8)
    out, _ = resize_and_center_crop(grey, 10)
    np.testing.assert_allclose(out, 128 / 255, atol=1e-6)
    floats = np.full((30, 40, 3), 0.25, np.float32)
    out, _ = resize_and_center_crop(floats, 12)
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    with pytest.raises(ValueError, match="image_size"):
        resize_and_center_crop(floats, 0)
    with pytest.raises(ValueError, match="image must be"):
        resize_and_center_crop(np.zeros((4, 4, 2)), 4)


def test_boxes_to_mask_maps_original_boxes_into_crop():
    _, transform = resize_and_center_crop(np.zeros((40, 80, 3), np.uint8), 20, crop_fraction=1.0)
    # Right half of the original, top quarter in height.
    mask, crop_boxes = boxes_to_mask(np.asarray([[0.0, 0.5, 0.25, 1.0]]), transform, 20)
    np.testing.assert_allclose(crop_boxes[0], [0.0, 10.0, 5.0, 20.0])
    expected = np.zeros((20, 20), bool)
    expected[:5, 10:] = True
    np.testing.assert_array_equal(mask, expected)
    empty, _ = boxes_to_mask(np.zeros((0, 4)), transform, 20)
    assert not empty.any()


def test_voc_preprocess_label_of_largest_object():
    example = {
        "image": np.zeros((50, 50, 3), np.uint8),
        "objects": {
            "bbox": np.asarray([[0.0, 0.0, 0.2, 0.2], [0.1, 0.1, 0.9, 0.9]], np.float32),
            "label": np.asarray([3, 7]),
        },
    }
    out = make_preprocess("voc", image_size=25, crop_fraction=1.0)(example)
    assert out["label"] == 7 and out["box_labels"][:3].tolist() == [3, 7, -1]
    # Union: the big box covers pixels 2..21 squared (400), the small one 0..4 squared
    # of which 16 pixels lie outside the big one.
    assert out["mask"].sum() == 400 + 16


def test_normalise_np_matches_jax():
    x = np.random.default_rng(0).random((2, 3, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(
        normalise_np(x, "imagenet"), normalise_images(jnp.asarray(x), "imagenet"), atol=1e-6
    )
    with pytest.raises(ValueError, match="family"):
        make_preprocess("cifar10", family="nope")


def test_batch_indices_deterministic_cover_and_drop():
    a = batch_indices(10, 4, shuffle_seed=1)
    b = batch_indices(10, 4, shuffle_seed=1)
    c = batch_indices(10, 4, shuffle_seed=1, epoch=1)
    assert [len(x) for x in a] == [4, 4, 2]
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert sorted(np.concatenate(a).tolist()) == list(range(10))
    assert not all((x == y).all() for x, y in zip(a, c, strict=True))
    assert [len(x) for x in batch_indices(10, 4, drop_remainder=True)] == [4, 4]
    assert np.concatenate(batch_indices(5, 2)).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="batch_size"):
        batch_indices(10, 0)


def test_iterate_batches_over_array_source():
    source = ArraySource({"x": np.arange(10.0), "y": np.arange(10) % 2})
    batches = list(
        iterate_batches(source, 3, preprocess=lambda e: {**e, "x2": 2 * e["x"]}, shuffle_seed=0)
    )
    assert len(batches) == 4
    xs = np.concatenate([b["x"] for b in batches])
    assert sorted(xs.tolist()) == list(range(10))
    np.testing.assert_array_equal(np.concatenate([b["x2"] for b in batches]), 2 * xs)
    assert len(list(iterate_batches(source, 3, max_examples=4))) == 2
    with pytest.raises(ValueError, match="equal lengths"):
        ArraySource({"x": np.zeros(3), "y": np.zeros(4)})


def test_stack_examples_strings_and_ragged():
    batch = stack_examples([{"t": "a", "v": np.zeros(2)}, {"t": "b", "v": np.ones(2)}])
    assert batch["t"] == ["a", "b"] and batch["v"].shape == (2, 2)
    with pytest.raises(ValueError, match="'v'"):
        stack_examples([{"v": np.zeros(2)}, {"v": np.zeros(3)}])
