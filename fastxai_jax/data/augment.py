"""Batch augmentations for training the benchmark's target (:mod:`fastxai_jax.train.target`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fastxai_jax.data.groundtruth import NUM_CLASSES

__all__ = ["null_augment"]


def null_augment(
    key: jax.Array,
    images: jax.Array,
    masks: jax.Array,
    labels: jax.Array,
    fraction: float,
    num_classes: int = NUM_CLASSES,
    *,
    cell: int = 8,
    max_cell_share: float = 0.6,
) -> tuple[jax.Array, jax.Array]:
    """Replaces a random ``fraction`` of a batch by object-free images.

    A replaced image keeps its pixels except the planted object and a
    one-pixel ring around it (set to 0, black) and a random share, up to
    ``max_cell_share``, of its ``cell × cell`` cells (also black). Its label
    becomes uniform over the classes.

    Args:
      key: PRNG key.
      images: ``[B, H, W, 3]`` in ``[0, 1]`` (H, W multiples of ``cell``).
      masks: ``[B, H, W]`` planted-object masks (bool or {0, 1}).
      labels: ``[B]`` int classes.
      fraction: expected share of replaced images, in ``[0, 1]``.
      num_classes: classes of the soft labels.
      cell: side of the blacked-out cells.
      max_cell_share: per image, the share of cells blacked out is uniform in
        ``[0, max_cell_share]``.

    Returns:
      ``(images [B, H, W, 3], soft_labels [B, num_classes])``.
    """
    batch, height, width = masks.shape
    if height % cell or width % cell:
        raise ValueError(f"images' sides {(height, width)} must be multiples of cell={cell}")
    null_key, share_key, cell_key = jax.random.split(key, 3)
    masks = masks.astype(images.dtype)
    ring = jax.lax.reduce_window(masks, 0.0, jax.lax.max, (1, 3, 3), (1, 1, 1), "SAME")
    share = jax.random.uniform(share_key, (batch, 1, 1), maxval=max_cell_share)
    cells = jax.random.bernoulli(cell_key, share, (batch, height // cell, width // cell))
    cells = jnp.repeat(jnp.repeat(cells.astype(images.dtype), cell, 1), cell, 2)
    keep = (1.0 - ring) * (1.0 - cells)
    null = jax.random.bernoulli(null_key, fraction, (batch,))
    out = jnp.where(null[:, None, None, None], images * keep[..., None], images)
    soft = jnp.where(
        null[:, None], 1.0 / num_classes, jax.nn.one_hot(labels, num_classes, dtype=images.dtype)
    )
    return out, soft
