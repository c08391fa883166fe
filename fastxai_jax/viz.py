"""Heatmap overlays of attributions on images (headless matplotlib, Agg backend)."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np


def _check_pair(image: Any, attribution: Any) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image, np.float32)
    attribution = np.asarray(attribution, np.float32)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image must be [H, W, 3] (or [H, W, 1]); got shape {image.shape}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if attribution.ndim == 3:  # per-channel attribution: sum channels
        attribution = attribution.sum(-1)
    if attribution.ndim != 2:
        raise ValueError(
            f"attribution must be [H, W] (or [H, W, C]); got shape {attribution.shape}"
        )
    if not np.all(np.isfinite(attribution)):
        raise ValueError("attribution contains NaN or Inf values")
    if attribution.shape != image.shape[:2]:
        attribution = _resize_nearest(attribution, image.shape[:2])
    return np.clip(image, 0.0, 1.0), attribution


def _resize_nearest(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows = (np.arange(shape[0]) * a.shape[0] // shape[0]).clip(0, a.shape[0] - 1)
    cols = (np.arange(shape[1]) * a.shape[1] // shape[1]).clip(0, a.shape[1] - 1)
    return a[rows][:, cols]


def normalise_attribution(attribution: Any, *, signed: bool = False) -> np.ndarray:
    """Scales a map for display: ``[0, 1]`` (min-max) or ``[-1, 1]`` (``signed``, by max |a|)."""
    a = np.asarray(attribution, np.float32)
    if signed:
        scale = np.abs(a).max()
        return a / scale if scale > 0 else np.zeros_like(a)
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def overlay(
    image: Any,
    attribution: Any,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
    signed: bool = False,
) -> np.ndarray:
    """Blends a colour-mapped attribution over an image.

    Args:
      image: ``[H, W, 3]`` in [0, 1].
      attribution: ``[H, W]`` (or ``[H, W, C]``, channels summed; another grid size
        is resized by nearest neighbour).
      alpha: heatmap opacity in [0, 1].
      cmap: matplotlib colormap (``"bwr"`` suits ``signed``).
      signed: centre the colours at 0 instead of min-max scaling.

    Returns:
      ``[H, W, 3]`` float32 RGB in [0, 1].
    """
    from matplotlib import colormaps

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha}")
    image, attribution = _check_pair(image, attribution)
    values = normalise_attribution(attribution, signed=signed)
    if signed:
        values = (values + 1.0) / 2.0
    heat = colormaps[cmap](values)[..., :3].astype(np.float32)
    return ((1.0 - alpha) * image + alpha * heat).astype(np.float32)


def save_overlay(
    path: str | pathlib.Path,
    image01: Any,
    attribution: Any,
    title: str | None = None,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
    signed: bool = False,
) -> pathlib.Path:
    """Writes a PNG: the image, the attribution, and their overlay side by side.

    Args:
      path: output ``.png`` (parent folders are created).
      image01: ``[H, W, 3]`` image in [0, 1].
      attribution: ``[H, W]`` map.
      title: optional figure title.
      alpha, cmap, signed: as :func:`overlay`.

    Returns:
      The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, attribution = _check_pair(image01, attribution)
    blended = overlay(image, attribution, alpha=alpha, cmap=cmap, signed=signed)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    axes[0].imshow(image)
    axes[0].set_title("image")
    shown = normalise_attribution(attribution, signed=signed)
    axes[1].imshow(shown, cmap=cmap, vmin=-1.0 if signed else 0.0, vmax=1.0)
    axes[1].set_title("attribution")
    axes[2].imshow(blended)
    axes[2].set_title("overlay")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
