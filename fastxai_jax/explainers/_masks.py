"""Patch grids, mask upsampling, masking in normalised space, Bernoulli policies.

Shared by the mask-based explainers (FEX, RISE, DAX, LTX, TVE). Everything here
is a pure ``jax.numpy`` function; validation happens in the public callers.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from fastxai_jax.models.maps import upsample_nearest  # noqa: F401  (one implementation)
from fastxai_jax.models.normalization import FAMILY_NORMALISATION
from fastxai_jax.models.normalization import normalise as normalise_images  # noqa: F401


def patch_grid(image_hw: tuple[int, int], patch_size: int, name: str = "x") -> tuple[int, int]:
    """Returns the ``(gh, gw)`` patch grid of an image, checking divisibility.

    Args:
      image_hw: ``(H, W)`` of the image.
      patch_size: side of a square patch in pixels.
      name: argument name used in the error message.

    Raises:
      ValueError: if ``patch_size`` does not divide ``H`` and ``W``.
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    if patch_size <= 0:
        raise ValueError(f"patch_size must be a positive int; got {patch_size}")
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"patch_size {patch_size} does not divide the image size {height}x{width} of {name}: "
            "the patch grid must tile the image exactly"
        )
    return height // patch_size, width // patch_size


def upsample_bilinear(grid: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """Bilinear upsampling (half-pixel centres, edge-clamped) of ``[..., gh, gw]`` to ``out_hw``."""
    shape = grid.shape[:-2] + tuple(out_hw)
    return jax.image.resize(grid, shape, method="bilinear", antialias=False)


def fill_value_01(fill: float, family: str, dtype=jnp.float32) -> jax.Array:
    """The ``[0, 1]`` pixel value whose normalisation under ``family`` equals ``fill``.

    A target ``apply_fn`` takes ``[0, 1]`` images and normalises them itself, so
    "masked = ``fill`` in normalised space" means substituting this value.

    Returns:
      ``[C]`` per-channel values (they may lie outside ``[0, 1]``).
    """
    if family not in FAMILY_NORMALISATION:
        raise ValueError(
            f"unknown normalisation family {family!r}; known: {sorted(FAMILY_NORMALISATION)}"
        )
    mean, std = FAMILY_NORMALISATION[family]
    return jnp.asarray(mean, dtype) + float(fill) * jnp.asarray(std, dtype)


def apply_mask(x: jax.Array, mask: jax.Array, fill01: jax.Array) -> jax.Array:
    """Keeps pixels where ``mask`` is 1 and substitutes ``fill01`` elsewhere.

    Args:
      x: ``[..., H, W, C]`` images in ``[0, 1]``.
      mask: ``[..., H, W]`` values in ``[0, 1]`` (same leading dims as ``x``).
      fill01: ``[C]`` substitute pixel (see :func:`fill_value_01`).

    Returns:
      ``[..., H, W, C]`` ``x·m + fill·(1 − m)``, i.e. masking in normalised space.
    """
    m = mask[..., None].astype(x.dtype)
    fill = jnp.reshape(fill01.astype(x.dtype), (1,) * (x.ndim - 1) + (x.shape[-1],))
    return x * m + fill * (1.0 - m)


def bernoulli_log_prob(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Elementwise ``log π(m)`` of a Bernoulli with the given logits (distrax form).

    ``m·log σ(l) + (1 − m)·log σ(−l)`` is finite for any finite logit
    (``±50`` included), unlike ``log(sigmoid(l))``.

    Args:
      logits: ``[...]`` Bernoulli logits.
      mask: ``[...]`` samples in ``{0, 1}`` (floats allowed).

    Returns:
      ``[...]`` log-probabilities.
    """
    chex.assert_equal_shape([logits, mask])
    m = mask.astype(logits.dtype)
    return m * jax.nn.log_sigmoid(logits) + (1.0 - m) * jax.nn.log_sigmoid(-logits)


def bernoulli_entropy(logits: jax.Array) -> jax.Array:
    """Elementwise entropy ``−p log p − (1 − p) log(1 − p)`` with ``p = σ(l)``, in nats."""
    p = jax.nn.sigmoid(logits)
    return -(p * jax.nn.log_sigmoid(logits) + (1.0 - p) * jax.nn.log_sigmoid(-logits))


def sample_bernoulli(key: jax.Array, logits: jax.Array) -> jax.Array:
    """Draws ``{0, 1}`` float samples, one per entry of ``logits`` (same shape)."""
    return jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(logits.dtype)
