"""The planted-object benchmark: determinism, masks, balance, ranges."""

import numpy as np
import pytest

from fastxai_jax.data.groundtruth import (
    CLASS_NAMES,
    COLOURS,
    NUM_CLASSES,
    SHAPES,
    class_name,
    make_benchmark,
)


@pytest.fixture(scope="module")
def bench():
    return make_benchmark(96, seed=3, grain=0.0)


def test_shapes_dtypes_ranges(bench):
    assert bench["images"].shape == (96, 64, 64, 3) and bench["images"].dtype == np.float32
    assert bench["labels"].shape == (96,) and bench["labels"].dtype == np.int32
    assert bench["masks"].shape == (96, 64, 64) and bench["masks"].dtype == bool
    assert bench["images"].min() >= 0.0 and bench["images"].max() <= 1.0
    assert NUM_CLASSES == 8 and len(CLASS_NAMES) == 8 and class_name(5) == "blue_square"
    areas = bench["masks"].sum(axis=(1, 2))
    assert areas.min() >= 15 and areas.max() <= 64 * 64 // 9  # inside one grid cell


def test_deterministic_and_seed_dependent():
    a = make_benchmark(20, seed=11, image_size=32)
    b = make_benchmark(20, seed=11, image_size=32)
    c = make_benchmark(20, seed=12, image_size=32)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["images"], c["images"])
    assert not np.array_equal(a["masks"], c["masks"])


def test_labels_balanced():
    labels = make_benchmark(8 * 13 + 3, seed=0, image_size=24)["labels"]
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    assert counts.min() == 13 and counts.max() == 14 and counts.sum() == 8 * 13 + 3


def test_mask_is_exactly_the_planted_colour(bench):
    colours = np.asarray(list(COLOURS.values()), np.float32)
    for image, label, mask in zip(bench["images"], bench["labels"], bench["masks"], strict=True):
        colour = colours[label // len(SHAPES)]
        inside = image[mask]
        # Flat colour (times one shade factor in [0.9, 1.05]) on every mask pixel.
        ratio = inside / colour[None, :]
        np.testing.assert_allclose(ratio, ratio[:1].repeat(len(ratio), 0), atol=1e-5)
        assert 0.89 <= ratio[0, 0] <= 1.06
        # The planted shape is drawn nowhere else in the image with that colour.
        outside = np.all(np.abs(image[~mask] / ratio[0:1] - colour[None, :]) < 1e-4, axis=-1)
        assert outside.sum() == 0


def test_boxes_enclose_masks(bench):
    for box, mask in zip(bench["boxes"], bench["masks"], strict=True):
        y0, x0, y1, x1 = box
        assert mask[y0:y1, x0:x1].sum() == mask.sum()
        assert mask[y0].any() and mask[y1 - 1].any() and mask[:, x0].any() and mask[:, x1 - 1].any()


def test_shape_area_ordering(bench):
    # Same radius distribution for all shapes: circles fill more than crosses.
    shape = bench["labels"] % len(SHAPES)
    areas = bench["masks"].sum(axis=(1, 2))
    assert areas[shape == 0].mean() > areas[shape == 3].mean()


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_examples"):
        make_benchmark(0, seed=0)
    with pytest.raises(ValueError, match="image_size"):
        make_benchmark(4, seed=0, image_size=8)
    with pytest.raises(ValueError, match="label"):
        class_name(8)
