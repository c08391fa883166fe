"""Localisation metrics (SPEC §7): maps against a ground-truth mask or box.

No model query: every function compares ``attribution [B, H, W]`` with a
ground truth ``[B, H, W]`` bool mask (or ``[B, 4]`` boxes, see
:func:`boxes_to_masks`) and returns one score per input.

* IoU (DAX: min-max normalised map thresholded at 0.2 vs the box mask).
* Pointing game (Zhang et al. 2016): the map's argmax falls inside the ground
  truth (optionally within ``tolerance`` pixels of it).
* Relevance mass (Arras et al. 2022): positive relevance inside the ground
  truth over all positive relevance.
* Segmentation (Chefer et al. 2021; LTX): map thresholded at its mean →
  pixel accuracy, mIoU over {background, object}, and the average precision
  of the pixel ranking against the mask. Per-input scores are returned; the
  papers' dataset figures pool pixel accuracy and IoU over the dataset
  (``sum(correct)/sum(labeled)``, ``sum(inter)/sum(union)`` per class) — use
  :func:`pooled_segmentation` for that — and average the AP per image.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.metrics._curves import finite_float
from fastxai_jax.models import maps


class SegmentationResult(NamedTuple):
    """Per-input segmentation scores and the counts needed to pool them.

    Attributes:
      pixel_accuracy: ``[B]`` fraction of pixels labelled correctly.
      miou: ``[B]`` mean of background and object IoU.
      average_precision: ``[B]`` AP of the pixel ranking vs the mask.
      intersection: ``[B, 2]`` (background, object) intersections.
      union: ``[B, 2]`` (background, object) unions.
    """

    pixel_accuracy: jax.Array
    miou: jax.Array
    average_precision: jax.Array
    intersection: jax.Array
    union: jax.Array


# ----------------------------------------------------------------------------- validation


def _check_map(attribution: Any, name: str = "attribution") -> jax.Array:
    shape = tuple(np.shape(attribution))
    if len(shape) != 3:
        raise ValueError(f"{name} must have shape [B, H, W]; got {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {shape})")
    return finite_float(attribution, name)


def _check_ground_truth(ground_truth: Any, attribution: jax.Array) -> jax.Array:
    """Accepts ``[B, H, W]`` masks or ``[B, 4]`` boxes; returns bool masks."""
    shape = tuple(np.shape(ground_truth))
    if shape == (attribution.shape[0], 4) and shape != attribution.shape[:2]:
        return boxes_to_masks(ground_truth, attribution.shape[1:3])
    if shape != attribution.shape:
        raise ValueError(
            f"ground_truth must be a mask of shape {attribution.shape} or boxes of shape "
            f"({attribution.shape[0]}, 4); got {shape}"
        )
    ground_truth = jnp.asarray(ground_truth)
    if ground_truth.dtype != jnp.bool_ and not isinstance(ground_truth, jax.core.Tracer):
        # A float mask of 0.1 everywhere must not count as "inside" everywhere.
        values = np.asarray(ground_truth)
        if not bool(np.all((values == 0) | (values == 1))):
            raise ValueError(
                "ground_truth must be a bool mask or hold only 0 and 1; got values in "
                f"[{np.nanmin(values):.4g}, {np.nanmax(values):.4g}] (threshold a soft mask "
                "yourself)"
            )
    return ground_truth.astype(bool)


def _check_threshold(threshold: Any) -> None:
    if isinstance(threshold, str):
        if threshold != "mean":
            raise ValueError(f'threshold must be a float in [0, 1] or "mean"; got {threshold!r}')
        return
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number):
        raise ValueError(f'threshold must be a float in [0, 1] or "mean"; got {threshold!r}')
    value = float(threshold)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"threshold must lie in [0, 1] (the map is min-max normalised); got {value}"
        )


def boxes_to_masks(boxes: Any, image_hw: tuple[int, int]) -> jax.Array:
    """Bounding boxes → masks.

    Args:
      boxes: ``[B, 4]`` ``(y0, x0, y1, x1)`` in pixels, half-open (``y0 ≤ y < y1``).
      image_hw: ``(H, W)``.

    Returns:
      ``[B, H, W]`` bool masks.
    """
    boxes = jnp.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape [B, 4] (y0, x0, y1, x1); got {boxes.shape}")
    rows = jnp.arange(image_hw[0]).reshape(1, -1, 1)
    cols = jnp.arange(image_hw[1]).reshape(1, 1, -1)
    y0, x0, y1, x1 = (boxes[:, i].reshape(-1, 1, 1) for i in range(4))
    return (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)


def minmax_normalise(attribution: jax.Array) -> jax.Array:
    """Per-input min-max normalisation of ``[B, H, W]`` maps to ``[0, 1]`` (constant → 0)."""
    return maps.minmax_normalise(attribution, (1, 2), eps=1e-12, eps_mode="floor")


def binarise(attribution: jax.Array, threshold: Any = "mean") -> jax.Array:
    """``[B, H, W]`` bool: normalised map ``≥ threshold``, or ``> mean`` with ``"mean"``."""
    if isinstance(threshold, str):
        return attribution > jnp.mean(attribution, axis=(1, 2), keepdims=True)
    return minmax_normalise(attribution) >= threshold


# ----------------------------------------------------------------------------- metrics


def iou(attribution: Any, ground_truth: Any, *, threshold: Any = "mean") -> jax.Array:
    """IoU of the thresholded map with a ground-truth mask or box.

    Args:
      attribution: ``[B, H, W]`` maps.
      ground_truth: ``[B, H, W]`` bool masks or ``[B, 4]`` boxes (y0, x0, y1, x1).
      threshold: a float in ``[0, 1]`` applied to the min-max normalised map
        (DAX: 0.2), or ``"mean"`` (pixels above the map's mean; LTX).

    Returns:
      ``[B]`` IoU (1 when both sets are empty).
    """
    attribution = _check_map(attribution)
    ground_truth = _check_ground_truth(ground_truth, attribution)
    _check_threshold(threshold)
    predicted = binarise(attribution, threshold)
    inter = jnp.sum(predicted & ground_truth, axis=(1, 2))
    union = jnp.sum(predicted | ground_truth, axis=(1, 2))
    return jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0)


def pointing_game(
    attribution: Any, ground_truth: Any, *, tolerance: float = 0.0, ties: str = "first"
) -> jax.Array:
    """1.0 where the map's maximum lies in the ground truth.

    Args:
      attribution: ``[B, H, W]`` maps.
      ground_truth: ``[B, H, W]`` masks or ``[B, 4]`` boxes.
      tolerance: a hit also counts when a ground-truth pixel lies within this
        Euclidean distance (pixels) of the maximum (Zhang et al.: 15).
      ties: which point of a tied maximum is tested: ``"first"`` (row-major
        first, the usual ``argmax``) or ``"centre"`` (the centroid of all maximal
        pixels, rounded) — fairer to blocky maps (upsampled cells), whose first
        maximum is the top-left corner of the best cell.

    Returns:
      ``[B]`` hits in ``{0, 1}``.
    """
    attribution = _check_map(attribution)
    ground_truth = _check_ground_truth(ground_truth, attribution)
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, int | float | np.number)
        or not float(tolerance) >= 0
        or not np.isfinite(float(tolerance))
    ):
        raise ValueError(f"tolerance must be a finite number ≥ 0 (pixels); got {tolerance!r}")
    if ties not in ("first", "centre"):
        raise ValueError(f"ties must be 'first' or 'centre'; got {ties!r}")
    batch, height, width = attribution.shape
    rows = jnp.arange(height).reshape(1, -1, 1)
    cols = jnp.arange(width).reshape(1, 1, -1)
    if ties == "first":
        flat_index = jnp.argmax(attribution.reshape(batch, -1), axis=-1)
        row = (flat_index // width).reshape(batch, 1, 1)
        col = (flat_index % width).reshape(batch, 1, 1)
    else:
        top = attribution == jnp.max(attribution, axis=(1, 2), keepdims=True)
        count = jnp.sum(top, axis=(1, 2), keepdims=True)
        row = jnp.round(jnp.sum(top * rows, axis=(1, 2), keepdims=True) / count)
        col = jnp.round(jnp.sum(top * cols, axis=(1, 2), keepdims=True) / count)
    near = (rows - row) ** 2 + (cols - col) ** 2 <= float(tolerance) ** 2
    return jnp.any(near & ground_truth, axis=(1, 2)).astype(jnp.float32)


def relevance_mass(attribution: Any, ground_truth: Any) -> jax.Array:
    """Share of positive relevance inside the ground truth (Arras et al.).

    Args:
      attribution: ``[B, H, W]`` maps (negative values count as 0).
      ground_truth: ``[B, H, W]`` masks or ``[B, 4]`` boxes.

    Returns:
      ``[B]`` in ``[0, 1]`` (0 for a map with no positive relevance).
    """
    attribution = _check_map(attribution)
    ground_truth = _check_ground_truth(ground_truth, attribution)
    positive = jnp.maximum(attribution, 0.0)
    inside = jnp.sum(jnp.where(ground_truth, positive, 0.0), axis=(1, 2))
    total = jnp.sum(positive, axis=(1, 2))
    return jnp.where(total > 0, inside / jnp.where(total > 0, total, 1.0), 0.0)


def average_precision(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Average precision of ranking ``scores`` against binary ``labels`` (per row).

    ``AP = Σ_n (R_n − R_{n−1}) P_n`` over the distinct score thresholds in
    decreasing order (tied scores enter together), as
    ``sklearn.metrics.average_precision_score``.

    Args:
      scores: ``[B, N]`` scores.
      labels: ``[B, N]`` bool labels.

    Returns:
      ``[B]`` AP (0 for a row without positives).
    """

    def one(score, label):
        order = jnp.argsort(-score, stable=True)
        sorted_score, sorted_label = score[order], label[order].astype(jnp.float32)
        true_positives = jnp.cumsum(sorted_label)
        precision = true_positives / jnp.arange(1, score.shape[0] + 1)
        positions = jnp.arange(score.shape[0])
        is_end = jnp.append(sorted_score[1:] != sorted_score[:-1], True)
        # Each element's contribution uses the precision at the end of its tie group.
        end = jax.lax.cummin(jnp.where(is_end, positions, score.shape[0]), reverse=True)
        num_positive = true_positives[-1]
        total = jnp.sum(sorted_label * precision[end])
        return jnp.where(num_positive > 0, total / jnp.maximum(num_positive, 1.0), 0.0)

    return jax.vmap(one)(scores, labels)


def segmentation_scores(
    attribution: Any, ground_truth: Any, *, threshold: Any = "mean", ap_classes: str = "object"
) -> SegmentationResult:
    """Segmentation pixel accuracy, mIoU and AP of a map vs an object mask.

    Args:
      attribution: ``[B, H, W]`` maps.
      ground_truth: ``[B, H, W]`` masks or ``[B, 4]`` boxes.
      threshold: ``"mean"`` (Chefer/LTX) or a float in ``[0, 1]`` on the
        min-max normalised map.
      ap_classes: ``"object"`` — AP of the map's pixel ranking vs the object
        mask; ``"both"`` — Chefer/LTX's code: AP over both classes' pixels
        pooled, scores ``[1 − m, m]`` (``m`` min-max normalised) vs the one-hot
        ``[background, object]`` labels.

    Returns:
      :class:`SegmentationResult`.
    """
    attribution = _check_map(attribution)
    ground_truth = _check_ground_truth(ground_truth, attribution)
    _check_threshold(threshold)
    predicted = binarise(attribution, threshold)
    batch = attribution.shape[0]
    num_pixels = attribution.shape[1] * attribution.shape[2]
    correct = jnp.sum(predicted == ground_truth, axis=(1, 2))
    inter = jnp.stack(
        [
            jnp.sum(~predicted & ~ground_truth, axis=(1, 2)),
            jnp.sum(predicted & ground_truth, (1, 2)),
        ],
        axis=-1,
    ).astype(jnp.float32)
    union = jnp.stack(
        [
            jnp.sum(~predicted | ~ground_truth, axis=(1, 2)),
            jnp.sum(predicted | ground_truth, (1, 2)),
        ],
        axis=-1,
    ).astype(jnp.float32)
    per_class = jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 1.0)
    if ap_classes not in ("object", "both"):
        raise ValueError(f'ap_classes must be "object" or "both"; got {ap_classes!r}')
    scores, labels = attribution.reshape(batch, -1), ground_truth.reshape(batch, -1)
    if ap_classes == "both":
        scores = minmax_normalise(attribution).reshape(batch, -1)
        scores = jnp.concatenate([1.0 - scores, scores], axis=-1)
        labels = jnp.concatenate([~labels, labels], axis=-1)
    ap = average_precision(scores, labels)
    return SegmentationResult(correct / num_pixels, jnp.mean(per_class, axis=-1), ap, inter, union)


def pooled_segmentation(result: SegmentationResult, num_pixels: int) -> dict[str, float]:
    """Dataset figures as Chefer et al. pool them: pixel accuracy and mIoU over all pixels.

    Args:
      result: per-input :class:`SegmentationResult` (concatenate batches first).
      num_pixels: ``H·W`` per image.

    Returns:
      ``{"pixel_accuracy", "miou", "map"}`` floats.
    """
    inter = np.asarray(result.intersection).sum(axis=0)
    union = np.asarray(result.union).sum(axis=0)
    correct = np.asarray(result.pixel_accuracy).sum() * num_pixels
    labeled = num_pixels * np.asarray(result.pixel_accuracy).shape[0]
    return {
        "pixel_accuracy": float(correct / labeled),
        "miou": float(np.mean(inter / np.maximum(union, 1.0))),
        "map": float(np.mean(np.asarray(result.average_precision))),
    }
