"""Sweeps over a (mocked) tfds split and a folder of images match direct library calls."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from _sweep_helpers import tiny_config
from PIL import Image

import fastxai_jax as fx
from fastxai_jax.data.preprocess import resize_and_center_crop
from fastxai_jax.models import zoo
from fastxai_jax.sweep import store


def _direct(images, weights_seed=0):
    """Saliency and insertion AUC of the tiny config's model, by the library directly."""
    module, family = zoo.build("small_cnn", 8, widths=(8, 8))
    variables = zoo.random_variables(
        module, zoo.normalise_images(images[:1], family), seed=weights_seed, train=False
    )
    apply_fn = zoo.make_apply_fn(module, family)
    target = np.asarray(np.argmax(apply_fn(variables, images), axis=-1))
    maps = fx.saliency(apply_fn, variables, images, target)
    curves = fx.insertion_deletion(apply_fn, variables, images, maps, target, step_size=48)
    return np.asarray(maps), np.asarray(curves["insertion"].auc), target


def test_tfds_split_matches_direct_calls(tmp_path):
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        source = tfds.data_source("cifar10", split="test")
        images = np.stack([resize_and_center_crop(source[i]["image"], 24)[0] for i in range(8)])
        labels = [int(source[i]["label"]) for i in range(8)]
        config = tiny_config(
            tmp_path / "out",
            data={"source": "tfds", "name": "cifar10", "split": "test", "image_size": 24},
            methods=[{"name": "saliency"}],
        )
        result = fx.sweep.run(config, progress=False)
    rows = result["table"]["rows"]
    maps, insertion, target = _direct(images)
    assert [r["label"] for r in rows] == labels
    assert [r["target"] for r in rows] == target.tolist()
    np.testing.assert_allclose([r["insertion_auc"] for r in rows], insertion, atol=1e-5)
    saved = np.load(store.shard_paths(tmp_path / "out", "cnn", "saliency", 0)[0])
    np.testing.assert_allclose(saved, maps, atol=1e-5, rtol=1e-5)


def test_folder_of_images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(8):
        pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i}.png")
    (folder / "notes.txt").write_text("not an image")
    data = {"source": "folder", "path": str(folder), "image_size": 24}
    with pytest.raises(ValueError, match="field target"):
        fx.sweep.run(tiny_config(tmp_path / "bad", data=data, target="label"), progress=False)
    config = tiny_config(tmp_path / "out", data=data, methods=[{"name": "saliency"}])
    rows = fx.sweep.run(config, progress=False)["table"]["rows"]
    images = np.stack(
        [resize_and_center_crop(np.asarray(Image.open(folder / f"img_{i}.png")), 24)[0]
         for i in range(8)]
    )  # fmt: skip
    _, insertion, target = _direct(images)
    assert [r["label"] for r in rows] == [-1] * 8
    assert [r["target"] for r in rows] == target.tolist()
    np.testing.assert_allclose([r["insertion_auc"] for r in rows], insertion, atol=1e-5)


def test_voc_boxes_are_the_masks_of_localisation_metrics(tmp_path):
    """A (mock) VOC split: IoU@0.2 and relevance mass against the union of its boxes."""
    from fastxai_jax.data.preprocess import boxes_to_mask
    from fastxai_jax.metrics import localisation

    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        source = tfds.data_source("voc/2007", split="test")
        examples = [source[i] for i in range(8)]
        config = tiny_config(
            tmp_path / "out",
            data={"source": "tfds", "name": "voc/2007", "split": "test", "image_size": 24},
            methods=[{"name": "saliency"}],
            metrics=[{"name": "iou", "options": {"threshold": 0.2}}, {"name": "relevance_mass"}],
        )
        rows = fx.sweep.run(config, progress=False)["table"]["rows"]
    crops = [resize_and_center_crop(e["image"], 24) for e in examples]
    images = np.stack([image for image, _ in crops])
    masks = np.stack(
        [
            boxes_to_mask(e["objects"]["bbox"], t, 24)[0]
            for e, (_, t) in zip(examples, crops, strict=True)
        ]
    )
    assert 0 < masks.mean() < 1
    maps, _, target = _direct(images)
    assert [r["target"] for r in rows] == target.tolist()
    iou = localisation.iou(maps, masks, threshold=0.2)
    np.testing.assert_allclose([r["iou"] for r in rows], iou, atol=1e-5)
    mass = localisation.relevance_mass(maps, masks)
    np.testing.assert_allclose([r["relevance_mass"] for r in rows], mass, atol=1e-5)


def test_subset_seed_draws_the_seeded_images(tmp_path):
    """``data.subset_seed`` (FEX: 1000 val images at seed 42) reads the seeded draw, in order."""
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        source = tfds.data_source("cifar10", split="test")
        chosen = np.sort(np.random.default_rng(42).choice(8, 4, replace=False))
        data = {"source": "tfds", "name": "cifar10", "split": "test", "image_size": 24,
                "num_images": 4, "subset_seed": 42}  # fmt: skip
        images = np.stack([resize_and_center_crop(source[int(i)]["image"], 24)[0] for i in chosen])
        labels = [int(source[int(i)]["label"]) for i in chosen]
        config = tiny_config(tmp_path / "out", data=data, methods=[{"name": "saliency"}],
                             shard_size=8)  # fmt: skip
        rows = fx.sweep.run(config, progress=False)["table"]["rows"]
    assert list(chosen) != [0, 1, 2, 3] and [r["label"] for r in rows] == labels
    _, insertion, _ = _direct(images)
    np.testing.assert_allclose([r["insertion_auc"] for r in rows], insertion, atol=1e-5)
