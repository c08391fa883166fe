"""What a sweep reads: target models with weights, and image sources read by index.

Every source is random access (``read(indices)``), so each process reads only
its own rows of each shard (the ``data_source`` index arithmetic).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = ["ImageSource", "load_model", "num_shards", "open_source", "shard_indices"]

_GROUNDTRUTH_SPLITS = ("train", "test", "explainer", "eval")
#: Photos of ``skimage.data`` (natural RGB images; no labels, no masks).
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle_left",
    "hubble_deep_field",
)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageSource(NamedTuple):
    """A random-access image source.

    Attributes:
      num_images: N.
      read: ``read(indices) -> (images [n, S, S, 3] float32 in [0, 1], labels [n] int32)``;
        labels are -1 where the source has none.
      has_labels: whether the source has class labels.
      read_masks: ``read_masks(indices) -> [n, S, S] bool`` ground-truth object
        masks (the localisation metrics' reference), or None where the source
        has none.
    """

    num_images: int
    read: Any
    has_labels: bool = True
    read_masks: Any = None


def _field(name: str, message: str) -> ValueError:
    return ValueError(f"sweep config field {name}: {message}")


def _groundtruth(data: Mapping[str, Any]) -> ImageSource:
    from fastxai_jax.data import groundtruth

    split = data.get("split", "eval")
    if split not in _GROUNDTRUTH_SPLITS:
        raise _field("data.split", f"groundtruth has splits {_GROUNDTRUTH_SPLITS}; got {split!r}")
    num, size, seed = data.get("num_images"), data.get("image_size", 64), data.get("seed", 0)
    if not isinstance(num, int) or num < 1:
        raise _field("data.num_images", f"must be a positive int; got {num!r}")
    offsets = {
        "train": 2 * seed,
        "test": 2 * seed + 1,
        "explainer": groundtruth.EXPLAINER_SEED + seed,
        "eval": groundtruth.EVAL_SEED + seed,
    }
    cache: dict[str, Any] = {}

    def read(indices: np.ndarray):
        if "bench" not in cache:  # deterministic in the seed: every process makes the same set
            cache["bench"] = groundtruth.make_benchmark(num, seed=offsets[split], image_size=size)
        bench = cache["bench"]
        return bench["images"][indices], bench["labels"][indices].astype(np.int32)

    def read_masks(indices: np.ndarray):
        read(indices[:0])
        return cache["bench"]["masks"][indices]

    return ImageSource(num, read, True, read_masks)


def _preprocess(image: np.ndarray, size: int) -> np.ndarray:
    from fastxai_jax.data.preprocess import resize_and_center_crop

    return resize_and_center_crop(np.asarray(image), size)[0]


class _Subset:
    """``source[chosen[i]]`` as item ``i``."""

    def __init__(self, source: Any, chosen: np.ndarray):
        self.source, self.chosen = source, chosen

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, i: int) -> Any:
        return self.source[int(self.chosen[i])]


def _tfds(data: Mapping[str, Any]) -> ImageSource:
    from fastxai_jax.data.tfds_sources import load_split, resolve_name

    try:
        spec = resolve_name(data.get("name"))
    except ValueError as err:
        raise _field("data.name", str(err)) from err
    if spec.kind == "text":
        raise _field("data.name", f"{data['name']!r} is a text dataset; a sweep explains images")
    subset_seed = data.get("subset_seed")
    if subset_seed is not None and (
        not isinstance(subset_seed, int) or isinstance(subset_seed, bool)
    ):
        raise _field("data.subset_seed", f"must be an int; got {subset_seed!r}")
    try:
        source = load_split(data["name"], data.get("split", ""), data_dir=data.get("data_dir"))
    except (ValueError, FileNotFoundError) as err:
        raise _field("data.split", str(err)) from err
    size = int(data.get("image_size", 224))
    num = min(len(source), int(data.get("num_images", len(source))))
    if subset_seed is not None:  # num_images drawn without replacement, kept in split order
        chosen = np.sort(np.random.default_rng(subset_seed).choice(len(source), num, False))
        source = _Subset(source, chosen)
    if spec.kind == "detection":  # VOC: the label of the largest object, the union of boxes
        from fastxai_jax.data.preprocess import boxes_to_mask, resize_and_center_crop

        def preprocess(example: dict[str, Any]) -> dict[str, Any]:
            image, transform = resize_and_center_crop(example[spec.input_key], size)
            mask, boxes = boxes_to_mask(example["objects"]["bbox"], transform, size)
            labels = np.asarray(example["objects"]["label"], np.int32).reshape(-1)
            count = min(len(labels), len(boxes))
            areas = (boxes[:count, 2] - boxes[:count, 0]) * (boxes[:count, 3] - boxes[:count, 1])
            label = labels[int(np.argmax(areas))] if count else -1
            return {"image": image, "mask": mask, "label": label}

        last: dict[tuple, Any] = {}

        def examples(indices: np.ndarray) -> list[dict[str, Any]]:
            key = tuple(int(i) for i in indices)
            if key not in last:  # read() and read_masks() of one batch decode once
                last.clear()
                last[key] = [preprocess(source[i]) for i in key]
            return last[key]

        def read_detection(indices: np.ndarray):
            done = examples(indices)
            images = np.stack([e["image"] for e in done]).astype(np.float32)
            return images, np.asarray([e["label"] for e in done], np.int32)

        def read_masks(indices: np.ndarray):
            return np.stack([e["mask"] for e in examples(indices)])

        return ImageSource(num, read_detection, True, read_masks)

    def read(indices: np.ndarray):
        examples = [source[int(i)] for i in indices]
        images = np.stack([_preprocess(e[spec.input_key], size) for e in examples])
        labels = [e[spec.label_key] if spec.label_key else -1 for e in examples]
        return images.astype(np.float32), np.asarray(labels, np.int32)

    return ImageSource(num, read, spec.label_key is not None)


def _skimage(data: Mapping[str, Any]) -> ImageSource:
    """The photos of ``skimage.data`` named in ``data.names`` (in memory; offline)."""
    names = data.get("names", list(SKIMAGE_PHOTOS))
    if not isinstance(names, list | tuple) or not names:
        raise _field("data.names", f"must be a non-empty list of photo names; got {names!r}")
    for i, name in enumerate(names):
        if name not in SKIMAGE_PHOTOS:
            raise _field(f"data.names[{i}]", f"unknown photo {name!r}; known: {SKIMAGE_PHOTOS}")
    size = int(data.get("image_size", 224))

    def read(indices: np.ndarray):
        import skimage.data

        photos = [_preprocess(getattr(skimage.data, names[int(i)])(), size) for i in indices]
        return np.stack(photos).astype(np.float32), np.full(len(indices), -1, np.int32)

    return ImageSource(len(names), read, has_labels=False)


def _folder(data: Mapping[str, Any]) -> ImageSource:
    from PIL import Image

    root = pathlib.Path(str(data.get("path", "")))
    if not root.is_dir():
        raise _field("data.path", f"{root} is not a directory")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise _field("data.path", f"{root} holds no images ({', '.join(_IMAGE_SUFFIXES)})")
    size = int(data.get("image_size", 224))

    def read(indices: np.ndarray):
        images = [_preprocess(np.asarray(Image.open(files[int(i)]).convert("RGB")), size)
                  for i in indices]  # fmt: skip
        return np.stack(images).astype(np.float32), np.full(len(indices), -1, np.int32)

    return ImageSource(len(files), read, has_labels=False)


def open_source(data: Mapping[str, Any]) -> ImageSource:
    """Opens ``config["data"]`` (no images decoded yet); ValueError names the bad field."""
    readers = {"groundtruth": _groundtruth, "tfds": _tfds, "folder": _folder, "skimage": _skimage}
    return readers[data["source"]](data)


def load_model(
    model: Mapping[str, Any], sample: np.ndarray, *, with_module: bool = False
) -> tuple[Any, ...]:
    """``(apply_fn, variables)`` for one ``config["models"]`` entry.

    Args:
      model: ``{"name", "weights", "num_classes", "options"}`` (see config.py).
      sample: ``[1, S, S, 3]`` an input of the sweep's size (for random init).
      with_module: also return the Flax module (``(apply_fn, variables,
        module)``), which learned explainers built on the target need.
    """
    from fastxai_jax.models import zoo

    weights = str(model["weights"])
    if weights.startswith("random:"):
        module, family = zoo.build(model["name"], model["num_classes"], **model["options"])
        from fastxai_jax.models.normalization import normalise as normalise_images

        variables = zoo.random_variables(
            module, normalise_images(sample, family), seed=int(weights.split(":", 1)[1]),
            train=False,
        )  # fmt: skip
    elif weights == "pretrained":  # weights that ship in a package (EfficientNet-Lite0)
        module, variables = zoo.load_pretrained(model["name"], None, **model["options"])
        family = zoo.MODEL_ZOO[model["name"]].family
    elif weights.startswith("target:"):
        from fastxai_jax.train.target import load_target

        module, variables, family = load_target(weights.split(":", 1)[1])
    else:
        if not pathlib.Path(weights).exists():
            raise FileNotFoundError(f"model weights {weights} do not exist")
        module, variables = zoo.load_pretrained(model["name"], weights, **model["options"])
        family = zoo.MODEL_ZOO[model["name"]].family
    apply_fn = zoo.make_apply_fn(module, family)
    return (apply_fn, variables, module) if with_module else (apply_fn, variables)


def shard_indices(num_images: int, shard_size: int, shard: int) -> tuple[np.ndarray, int]:
    """Global image indices of ``shard`` padded to ``shard_size`` with the last
    image, and the number of real ones."""
    start = shard * shard_size
    stop = min(num_images, start + shard_size)
    indices = np.arange(start, start + shard_size)
    return np.minimum(indices, num_images - 1), stop - start


def num_shards(num_images: int, shard_size: int) -> int:
    """``ceil(num_images / shard_size)``."""
    return -(-num_images // shard_size)
