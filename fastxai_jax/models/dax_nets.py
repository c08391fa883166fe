"""DAX's two per-input networks (Bhattacharya et al., 2024; SPEC §3).

* :class:`DaxMaskGenerator` ``g``: Conv7×7(C→32) + LeakyReLU → Conv7×7(32→1) +
  LeakyReLU → MaxPool 8 → nearest upsample ×8 → LeakyReLU → min-max normalise.
* :class:`DaxStudent` ``s``: flatten → Linear(hidden) → LeakyReLU → BatchNorm →
  Dropout 0.1 → Linear 1 → sigmoid; a local surrogate of ``p_f(ŷ | ·)``.

Both take ``[B, H, W, C]`` images in ``[0, 1]``; ``H`` and ``W`` must be
multiples of the pooling size. LeakyReLU uses PyTorch's default slope 0.01.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fastxai_jax.models import maps
from fastxai_jax.models.pooling import max_pool

LEAKY_SLOPE = 0.01


def minmax_normalise(values: jax.Array, axes: tuple[int, ...], eps: float = 1e-8) -> jax.Array:
    """``(v − min) / (max − min + eps)`` over ``axes`` (per remaining index)."""
    return maps.minmax_normalise(values, axes, eps=eps, eps_mode="add")


# How the generator min-max normalises its masks (see DaxMaskGenerator.normalise).
MASK_NORMALISATIONS = ("image", "batch")


class DaxMaskGenerator(nn.Module):
    """DAX mask generator ``g``.

    Attributes:
      features: channels of the first convolution (authors: 32).
      kernel_size: convolution kernel side (authors: 7).
      pool: max-pool window and nearest upsample factor (authors: 8).
      normalise: ``"image"`` (each mask stretched to [0, 1] on its own) or
        ``"batch"`` (the authors' code: one min and max over the whole batch,
        so a sample's mask need not span [0, 1]; no better on the embedded
        benchmark, 8 images: deletion 0.352 vs 0.355, pointing 0.25 vs 0.25).
    """

    features: int = 32
    kernel_size: int = 7
    pool: int = 8
    normalise: str = "image"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``x: [B, H, W, C]`` to a mask ``[B, H, W]`` in ``[0, 1]``."""
        k = (self.kernel_size, self.kernel_size)
        h = nn.leaky_relu(nn.Conv(self.features, k, padding="SAME")(x), LEAKY_SLOPE)
        h = nn.leaky_relu(nn.Conv(1, k, padding="SAME")(h), LEAKY_SLOPE)
        window = (self.pool, self.pool)
        h = max_pool(h, window, strides=window)[..., 0]
        h = maps.upsample_nearest(h, (h.shape[1] * self.pool, h.shape[2] * self.pool))
        h = nn.leaky_relu(h, LEAKY_SLOPE)
        if self.normalise not in MASK_NORMALISATIONS:
            raise ValueError(
                f"normalise must be one of {MASK_NORMALISATIONS}; got {self.normalise!r}"
            )
        return minmax_normalise(h, axes=(0, 1, 2) if self.normalise == "batch" else (1, 2))


class DaxStudent(nn.Module):
    """DAX student ``s`` approximating the black box's class probability.

    Attributes:
      hidden: width of the hidden layer (authors: 512).
      dropout: dropout rate (authors: 0.1).
    """

    hidden: int = 512
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps ``x: [B, H, W, C]`` to probabilities ``[B]``."""
        h = jnp.reshape(x, (x.shape[0], -1))
        h = nn.leaky_relu(nn.Dense(self.hidden)(h), LEAKY_SLOPE)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(h)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return jax.nn.sigmoid(nn.Dense(1)(h))[:, 0]
