"""Feature ranking for perturbation metrics: attribution → per-pixel rank.

A perturbation curve removes (or restores) features in order of decreasing
attribution. Features are pixels, ``n×n`` patches, or the cells of the
explainer's own grid; each pixel (or, for per-channel ranking, each pixel of
each channel) is tagged with the rank of the feature it belongs to, so that
the image at step ``t`` is simply ``where(rank < k_t, a, b)`` — no Python loop
over steps and nothing materialised per step beyond the image itself.

Validation happens in the public callers (``perturbation.py``); everything
here is traceable under ``jit`` with the options static.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

GRANULARITIES = ("pixel", "patch", "grid")
TIE_BREAKS = ("index", "random")


def feature_index_map(
    image_hw: tuple[int, int], granularity: str, patch_size: int, grid_hw: tuple[int, int]
) -> tuple[np.ndarray, int]:
    """Static map from each pixel to the feature it belongs to.

    Args:
      image_hw: ``(H, W)``.
      granularity: ``"pixel"``, ``"patch"`` (``patch_size``² squares, the last
        row/column of patches may be partial) or ``"grid"`` (the cells of a
        ``grid_hw`` attribution, pixel ``i`` in cell ``floor(i·gh/H)``).
      patch_size: side of a patch in pixels (``"patch"`` only).
      grid_hw: ``(gh, gw)`` of the attribution grid (``"grid"`` only).

    Returns:
      ``(index [H, W] int32, num_features)``.
    """
    height, width = image_hw
    rows, cols = np.arange(height), np.arange(width)
    if granularity == "pixel":
        row_ids, col_ids, num_cols, num_rows = rows, cols, width, height
    elif granularity == "patch":
        row_ids, col_ids = rows // patch_size, cols // patch_size
        num_rows, num_cols = math.ceil(height / patch_size), math.ceil(width / patch_size)
    else:
        num_rows, num_cols = grid_hw
        row_ids, col_ids = (rows * num_rows) // height, (cols * num_cols) // width
    index = row_ids[:, None] * num_cols + col_ids[None, :]
    return index.astype(np.int32), int(num_rows * num_cols)


def feature_scores(
    attribution: jax.Array, index: np.ndarray, num_features: int, granularity: str
) -> jax.Array:
    """Per-feature scores from an attribution.

    Args:
      attribution: ``[B, H, W]``, ``[B, H, W, C]`` (per-channel) or ``[B, gh, gw]`` (grid).
      index: ``[H, W]`` pixel → feature map from :func:`feature_index_map`.
      num_features: number of features ``F``.
      granularity: as in :func:`feature_index_map`.

    Returns:
      ``[B, Cr, F]`` scores with ``Cr = C`` for per-channel input, else 1.
      Patches score the *sum* of their pixels' attributions.
    """
    if attribution.ndim == 4:  # per-channel: [B, H, W, C] -> [B, C, H, W]
        per_channel = jnp.moveaxis(attribution, -1, 1)
    else:
        per_channel = attribution[:, None]
    batch, channels = per_channel.shape[:2]
    if granularity == "grid":
        return per_channel.reshape(batch, channels, num_features)
    flat = per_channel.reshape(batch, channels, -1)
    if granularity == "pixel":
        return flat
    summed = jax.ops.segment_sum(
        jnp.moveaxis(flat, -1, 0), jnp.asarray(index.reshape(-1)), num_segments=num_features
    )  # [F, B, Cr]
    return jnp.moveaxis(summed, 0, -1)


def feature_ranks(scores: jax.Array, tie_break: str = "index", key: jax.Array | None = None):
    """Rank of each feature in decreasing score order (0 = most important).

    Args:
      scores: ``[..., F]`` feature scores.
      tie_break: ``"index"`` (equal scores keep index order: a stable sort) or
        ``"random"`` (equal scores ordered by a random permutation from ``key``).
      key: PRNG key for ``"random"``.

    Returns:
      ``[..., F]`` int32 ranks, a permutation of ``0..F-1`` along the last axis.
    """
    num_features = scores.shape[-1]
    flat = scores.reshape(-1, num_features)
    if tie_break == "random":
        keys = jax.random.split(key, flat.shape[0])
        secondary = jax.vmap(lambda k: jax.random.permutation(k, num_features))(keys)
        order = jax.vmap(lambda s, r: jnp.lexsort((r, -s)))(flat, secondary)
    else:
        order = jnp.argsort(-flat, axis=-1, stable=True)
    positions = jnp.arange(num_features, dtype=jnp.int32)
    ranks = jax.vmap(lambda o: jnp.zeros((num_features,), jnp.int32).at[o].set(positions))(order)
    return ranks.reshape(scores.shape)


def pixel_ranks(
    attribution: jax.Array,
    image_hw: tuple[int, int],
    *,
    granularity: str = "pixel",
    patch_size: int = 1,
    tie_break: str = "index",
    key: jax.Array | None = None,
    negate: bool = False,
) -> tuple[jax.Array, int]:
    """Per-pixel feature ranks of an attribution.

    Args:
      attribution: ``[B, H, W]``, ``[B, H, W, C]`` or ``[B, gh, gw]``.
      image_hw: ``(H, W)`` of the images.
      granularity: ``"pixel"``, ``"patch"`` or ``"grid"``.
      patch_size: patch side for ``"patch"``.
      tie_break: ``"index"`` or ``"random"``.
      key: PRNG key for random tie-breaking.
      negate: rank by ``-attribution`` (least important first; POS/NEG's NEG).

    Returns:
      ``(ranks [B, H, W, Cr] int32, num_features)`` with ``Cr`` = C for a
      per-channel attribution, else 1.
    """
    grid_hw = tuple(attribution.shape[1:3])
    index, num_features = feature_index_map(image_hw, granularity, patch_size, grid_hw)
    scores = feature_scores(attribution, index, num_features, granularity)
    if negate:
        scores = -scores
    ranks = feature_ranks(scores, tie_break, key)  # [B, Cr, F]
    per_pixel = ranks[:, :, jnp.asarray(index)]  # [B, Cr, H, W]
    return jnp.moveaxis(per_pixel, 1, -1), num_features


def step_counts(num_features: int, num_steps: int | None, step_size: int | None) -> tuple[int, ...]:
    """Number of features perturbed at each point of a curve.

    With ``step_size`` (RISE): ``k_t = min(t·step_size, F)`` for
    ``t = 0..ceil(F/step_size)``. With ``num_steps``: ``k_t = floor(t·F/num_steps)``
    for ``t = 0..num_steps`` (both agree when ``step_size·num_steps = F``).

    Returns:
      ``(k_0, ..., k_T)`` with ``k_0 = 0`` and ``k_T = F``.
    """
    if step_size is not None:
        total = math.ceil(num_features / step_size)
        return tuple(min(t * step_size, num_features) for t in range(total + 1))
    return tuple((t * num_features) // num_steps for t in range(num_steps + 1))
