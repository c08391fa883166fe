"""Per-model preprocessing of dataset examples into [0, 1] float32 NHWC images.

The evaluation protocol of torchvision/timm: resize the shorter side to
``image_size / crop_fraction`` (bilinear, antialiased, via PIL), centre-crop
``image_size x image_size``, scale to [0, 1]. Models normalise internally
(``fastxai_jax.models.make_apply_fn``), so ``family`` normalisation here is
optional (for code that calls ``module.apply`` directly).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from fastxai_jax.data.tfds_sources import resolve_name
from fastxai_jax.models.normalization import FAMILY_NORMALISATION

__all__ = [
    "CropTransform",
    "resize_and_center_crop",
    "boxes_to_mask",
    "normalise_np",
    "make_preprocess",
]

MAX_BOXES = 50  # VOC has at most 42 objects per image


class CropTransform(NamedTuple):
    """Maps original pixel coordinates to crop pixels: ``crop = orig * scale - offset``."""

    scale: float
    offset_y: float
    offset_x: float
    height: int  # original image size
    width: int


def _to_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image must be [H, W] or [H, W, 1|3|4]; got shape {image.shape}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image[..., :3]


def resize_and_center_crop(
    image: np.ndarray, image_size: int, *, crop_fraction: float = 0.875
) -> tuple[np.ndarray, CropTransform]:
    """Resizes the shorter side to ``image_size / crop_fraction`` and centre-crops.

    Args:
      image: ``[H, W, C]`` uint8 (0..255) or float in [0, 1]; C in {1, 3, 4}
        (alpha dropped, grey repeated).
      image_size: output side S.
      crop_fraction: S divided by the resized shorter side (0.875 = 224/256;
        1.0 resizes the shorter side straight to S).

    Returns:
      ``(image [S, S, 3] float32 in [0, 1], CropTransform)``.
    """
    if not isinstance(image_size, int | np.integer) or image_size < 1:
        raise ValueError(f"image_size must be a positive int; got {image_size!r}")
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must lie in (0, 1]; got {crop_fraction}")
    image = _to_rgb(image)
    height, width = image.shape[:2]
    short = int(round(image_size / crop_fraction))
    scale = short / min(height, width)
    new_h = max(image_size, int(round(height * scale)))
    new_w = max(image_size, int(round(width * scale)))
    if image.dtype == np.uint8:
        resized = np.asarray(
            Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR), np.float32
        )
        resized /= 255.0
    else:
        channels = [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(image[..., c], np.float32)).resize(
                    (new_w, new_h), Image.BILINEAR
                )
            )
            for c in range(3)
        ]
        resized = np.stack(channels, axis=-1)
    top = (new_h - image_size) // 2
    left = (new_w - image_size) // 2
    crop = resized[top : top + image_size, left : left + image_size]
    transform = CropTransform(new_h / height, float(top), float(left), height, width)
    # (new_w / width ~= new_h / height up to rounding; one scale keeps boxes simple)
    return np.clip(crop, 0.0, 1.0).astype(np.float32), transform


def _crop_boxes(boxes: np.ndarray, transform: CropTransform, image_size: int) -> np.ndarray:
    """Normalised original ``[K, 4]`` (ymin, xmin, ymax, xmax) -> crop pixel boxes, clipped."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    ys = boxes[:, [0, 2]] * transform.height * transform.scale - transform.offset_y
    xs = boxes[:, [1, 3]] * transform.width * transform.scale - transform.offset_x
    out = np.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], axis=1)
    return np.clip(out, 0.0, float(image_size))


def boxes_to_mask(
    boxes: np.ndarray, transform: CropTransform, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterises object boxes into the crop.

    Args:
      boxes: ``[K, 4]`` (ymin, xmin, ymax, xmax) normalised to the ORIGINAL image
        (TFDS ``BBoxFeature`` convention).
      transform: from :func:`resize_and_center_crop`.
      image_size: crop side S.

    Returns:
      ``(mask [S, S] bool, union of the boxes; crop_boxes [K, 4] float32 in
      crop pixels, clipped to the crop)``. A pixel is inside when its centre is.
    """
    crop_boxes = _crop_boxes(boxes, transform, image_size)
    centres = np.arange(image_size, dtype=np.float32) + 0.5
    inside_y = (centres[None, :] >= crop_boxes[:, 0:1]) & (centres[None, :] < crop_boxes[:, 2:3])
    inside_x = (centres[None, :] >= crop_boxes[:, 1:2]) & (centres[None, :] < crop_boxes[:, 3:4])
    mask = np.any(inside_y[:, :, None] & inside_x[:, None, :], axis=0)
    return mask, crop_boxes


def normalise_np(x: np.ndarray, family: str) -> np.ndarray:
    """NumPy twin of ``models.normalization.normalise``: ``x [..., 3]`` in [0, 1]."""
    if family not in FAMILY_NORMALISATION:
        raise ValueError(
            f"unknown normalisation family {family!r}; known: {sorted(FAMILY_NORMALISATION)}"
        )
    mean, std = FAMILY_NORMALISATION[family]
    return ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)


def make_preprocess(
    name: str,
    *,
    image_size: int = 224,
    crop_fraction: float = 0.875,
    family: str | None = None,
    tokenizer: Callable[[str], Any] | None = None,
    max_boxes: int = MAX_BOXES,
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``preprocess(example) -> dict`` for dataset ``name`` (see ``tfds_sources.DATASETS``).

    Outputs per kind:
      * image: ``{"image": [S, S, 3] float32, "label": int32}``;
      * detection (VOC): ``{"image", "mask": [S, S] bool (union of object boxes),
        "label": int32 (class of the largest object), "boxes": [max_boxes, 4]
        float32 crop pixels (ymin, xmin, ymax, xmax), padded with -1,
        "box_labels": [max_boxes] int32 padded with -1}``;
      * text (SST-2): ``{"text": str, "label": int32}``, plus ``tokenizer(text)``'s
        dict entries (or ``"input_ids"``) when a tokenizer is given.

    ``image`` is in [0, 1] unless ``family`` is given (then normalised).
    """
    spec = resolve_name(name)
    if family is not None and family not in FAMILY_NORMALISATION:
        raise ValueError(
            f"unknown normalisation family {family!r}; known: {sorted(FAMILY_NORMALISATION)}"
        )
    if tokenizer is not None and not callable(tokenizer):
        raise ValueError(f"tokenizer must be callable; got {type(tokenizer).__name__}")

    def finish(image: np.ndarray) -> np.ndarray:
        return image if family is None else normalise_np(image, family)

    if spec.kind == "text":

        def preprocess_text(example: dict[str, Any]) -> dict[str, Any]:
            text = example[spec.input_key]
            text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
            out: dict[str, Any] = {"text": text, "label": np.int32(example[spec.label_key])}
            if tokenizer is not None:
                tokens = tokenizer(text)
                out.update(tokens if isinstance(tokens, dict) else {"input_ids": tokens})
            return out

        return preprocess_text

    if spec.kind == "detection":

        def preprocess_detection(example: dict[str, Any]) -> dict[str, Any]:
            image, transform = resize_and_center_crop(
                example[spec.input_key], image_size, crop_fraction=crop_fraction
            )
            objects = example["objects"]
            mask, crop_boxes = boxes_to_mask(objects["bbox"], transform, image_size)
            labels = np.asarray(objects["label"], np.int32).reshape(-1)
            areas = (crop_boxes[:, 2] - crop_boxes[:, 0]) * (crop_boxes[:, 3] - crop_boxes[:, 1])
            count = min(len(labels), max_boxes)
            boxes = np.full((max_boxes, 4), -1.0, np.float32)
            box_labels = np.full((max_boxes,), -1, np.int32)
            boxes[:count], box_labels[:count] = crop_boxes[:count], labels[:count]
            label = labels[int(np.argmax(areas))] if len(labels) else np.int32(-1)
            return {
                "image": finish(image),
                "mask": mask,
                "label": np.int32(label),
                "boxes": boxes,
                "box_labels": box_labels,
            }

        return preprocess_detection

    def preprocess_image(example: dict[str, Any]) -> dict[str, Any]:
        image, _ = resize_and_center_crop(
            example[spec.input_key], image_size, crop_fraction=crop_fraction
        )
        return {"image": finish(image), "label": np.int32(example[spec.label_key])}

    return preprocess_image
