"""Image segmentations for perturbation explainers (DAX, SPEC §3).

A segmentation is an ``[H, W]`` int32 label map with labels in ``[0, K)``.
The patch grid is pure ``jax.numpy``; superpixels (quickshift, SLIC) run in
numpy through scikit-image, *outside* ``jit``, and are padded to a common
segment count so a batch can be ``vmap``ped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.explainers._masks import patch_grid

SUPERPIXEL_METHODS = ("quickshift", "slic")


def grid_segments(image_hw: tuple[int, int], patch_size: int) -> tuple[jax.Array, int]:
    """Labels each pixel with its patch index (row-major).

    Args:
      image_hw: ``(H, W)``.
      patch_size: patch side in pixels; must divide ``H`` and ``W``.

    Returns:
      ``([H, W] int32 labels, K = gh·gw)``.
    """
    gh, gw = patch_grid(image_hw, patch_size)
    rows = jnp.arange(image_hw[0]) // patch_size
    cols = jnp.arange(image_hw[1]) // patch_size
    labels = rows[:, None] * gw + cols[None, :]
    return labels.astype(jnp.int32), gh * gw


def superpixel_segments(
    x: np.ndarray, method: str = "quickshift", **options
) -> tuple[np.ndarray, np.ndarray]:
    """Superpixels of a batch with scikit-image (numpy, not jit-able).

    Defaults follow DAX's authors for quickshift (kernel 4, max_dist 200, ratio
    0.2) and ``n_segments=50, compactness=10`` for SLIC.

    Args:
      x: ``[B, H, W, 3]`` images in ``[0, 1]`` (concrete).
      method: ``"quickshift"`` or ``"slic"``.
      **options: passed to the scikit-image function.

    Returns:
      ``(labels [B, H, W] int32 in [0, K), valid [B, K] float32)`` where ``K``
      is the largest segment count in the batch and ``valid[b, k]`` says
      whether image ``b`` has segment ``k``.
    """
    from skimage.segmentation import quickshift, slic

    if method not in SUPERPIXEL_METHODS:
        raise ValueError(f"segmentation must be one of {SUPERPIXEL_METHODS}; got {method!r}")
    if isinstance(x, jax.core.Tracer):
        raise ValueError("x must be concrete for superpixel segmentation (call outside jit)")
    images = np.asarray(x, np.float64)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"x must have shape [B, H, W, 3] for superpixels; got {images.shape}")
    labels = []
    for image in images:
        if method == "quickshift":
            kw = {"kernel_size": 4, "max_dist": 200, "ratio": 0.2, **options}
            # the authors segment the uint8 image (``astype(np.uint8)`` truncates);
            # quickshift turns it back into [0, 1] floats before its Lab conversion.
            seg = quickshift((image * 255.0).astype(np.uint8), convert2lab=True, **kw)
        else:
            kw = {"n_segments": 50, "compactness": 10.0, "start_label": 0, **options}
            seg = slic(image, **kw)
        _, relabelled = np.unique(seg, return_inverse=True)
        labels.append(relabelled.reshape(seg.shape).astype(np.int32))
    num_segments = max(int(seg.max()) + 1 for seg in labels)
    valid = np.zeros((len(labels), num_segments), np.float32)
    for b, seg in enumerate(labels):
        valid[b, : int(seg.max()) + 1] = 1.0
    return np.stack(labels), valid
