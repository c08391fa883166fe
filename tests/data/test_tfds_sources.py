"""TFDS data sources without TensorFlow: mocked splits and a real tiny ArrayRecord dataset.

``tfds.testing.mock_data(policy=USE_CODE)`` makes ``tfds.data_source`` return
random examples with each dataset's real feature spec (no files, no TF). The
real-file path is checked by building a tiny dataset with a TFDS
``GeneratorBasedBuilder`` (images given as PNG bytes, so that building needs
no TensorFlow either) and reading it back through ``tfds.data_source``.
"""

import io

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fastxai_jax.data import iterate_batches, load_split, make_preprocess  # noqa: E402
from fastxai_jax.data.tfds_sources import _open  # noqa: E402


@pytest.fixture
def mocked():
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def test_mocked_cifar10_batches(mocked):
    source = load_split("cifar10", "train")
    assert len(source) == 6
    preprocess = make_preprocess("cifar10", image_size=32, crop_fraction=1.0)
    batches = list(iterate_batches(source, 4, preprocess=preprocess))
    assert [b["image"].shape for b in batches] == [(4, 32, 32, 3), (2, 32, 32, 3)]
    assert batches[0]["image"].dtype == np.float32
    assert 0.0 <= batches[0]["image"].min() and batches[0]["image"].max() <= 1.0
    np.testing.assert_allclose(batches[0]["image"][0], source[0]["image"] / 255.0, atol=1e-6)
    assert batches[0]["label"].dtype == np.int32


def test_mocked_imagenette_resize_crop(mocked):
    source = load_split("imagenette", "validation")
    preprocess = make_preprocess("imagenette", image_size=24, family="imagenet")
    batch = next(iterate_batches(source, 3, preprocess=preprocess, shuffle_seed=0))
    assert batch["image"].shape == (3, 24, 24, 3)
    assert batch["image"].min() < 0  # normalised


def _consistent(example):
    # The mock draws each objects/* field with its own random length; real data agree.
    objects = example["objects"]
    num = min(len(objects["bbox"]), len(objects["label"]))
    bbox = np.sort(np.asarray(objects["bbox"][:num]).reshape(num, 2, 2), axis=1)
    objects = {"bbox": bbox.reshape(num, 4), "label": np.asarray(objects["label"][:num])}
    return {**example, "objects": objects}


def test_mocked_voc_boxes_to_mask(mocked):
    source = load_split("voc", "validation")
    example = _consistent(source[0])
    out = make_preprocess("voc", image_size=32, crop_fraction=1.0)(example)
    assert out["mask"].shape == (32, 32) and out["mask"].dtype == bool
    num = len(example["objects"]["label"])
    assert (out["box_labels"][:num] == example["objects"]["label"]).all()
    assert (out["box_labels"][num:] == -1).all()
    examples = [_consistent(source[i]) for i in range(2)]
    batch = next(iterate_batches(examples, 2, preprocess=make_preprocess("voc", image_size=16)))
    assert batch["boxes"].shape == (2, 50, 4) and batch["mask"].shape == (2, 16, 16)


def test_mocked_sst2_text_and_tokenizer(mocked):
    source = load_split("sst2", "validation")
    preprocess = make_preprocess("sst2", tokenizer=lambda text: np.asarray([len(text), 1]))
    batch = next(iterate_batches(source, 3, preprocess=preprocess))
    assert isinstance(batch["text"], list) and len(batch["text"]) == 3
    assert batch["input_ids"].shape == (3, 2) and batch["label"].shape == (3,)


def test_unknown_name_and_missing_data(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset name 'mnist'"):
        load_split("mnist", "train")
    with pytest.raises(FileNotFoundError, match=r"ILSVRC2012_img_val.tar in .*downloads/manual"):
        load_split("imagenet2012", "validation", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="not prepared"):
        load_split("cifar10", "test", data_dir=tmp_path)


def _png(image):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class TinyShapes(tfds.core.GeneratorBasedBuilder):
    """Six tiny images with labels, written as real ArrayRecord files."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(num_classes=3),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(6)}

    def _generate_examples(self, num):
        for i in range(num):
            image = np.full((20 + i, 30, 3), 40 * i, np.uint8)
            yield i, {"image": _png(image), "label": i % 3}


def test_real_array_record_round_trip(tmp_path):
    TinyShapes(data_dir=tmp_path, file_format="array_record").download_and_prepare()
    source = _open("tiny_shapes", "train", tmp_path)
    assert len(source) == 6
    seen = set()
    for index in range(6):  # TFDS shuffles on write: identify each record by its height
        example = source[index]
        i = example["image"].shape[0] - 20
        seen.add(i)
        assert example["image"].shape == (20 + i, 30, 3) and int(example["label"]) == i % 3
        np.testing.assert_array_equal(example["image"], 40 * i)
    assert seen == set(range(6))
    with pytest.raises(FileNotFoundError, match="not prepared"):
        _open("tiny_shapes", "train", tmp_path / "elsewhere")
