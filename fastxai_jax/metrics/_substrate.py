"""Substrates for perturbation metrics: what a removed pixel becomes.

* ``"zeros"``: 0 in ``[0, 1]`` pixel space (black; MFABA's evaluation).
* ``"zeros_normalised"``: the pixel whose normalisation is 0, i.e. the
  family's mean (RISE's deletion, FEX; ``apply_fn`` normalises itself).
* ``"blur"``: RISE's blur, a Gaussian kernel of size 11 and σ 5 applied per
  channel with "same" zero padding *in the space the model sees* (padding
  with the fill value of ``"zeros_normalised"`` when a family is given, else
  0). The kernel is RISE's: ``scipy.ndimage.gaussian_filter`` (truncate 4,
  reflect boundary) of an 11×11 delta, which is separable, so it is applied as
  two 1-D convolutions.
* ``"mean"``: each image's per-channel mean colour.
* a custom fill: any array broadcastable to ``[B, H, W, C]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.models.normalization import FAMILY_NORMALISATION

SUBSTRATES = ("zeros", "zeros_normalised", "blur", "mean")


@functools.lru_cache(maxsize=8)
def gaussian_kernel_1d(size: int = 11, sigma: float = 5.0, truncate: float = 4.0) -> np.ndarray:
    """RISE's 1-D blur kernel: a Gaussian filter (reflect boundary) of a centred delta.

    Equals one factor of ``scipy.ndimage.gaussian_filter(delta_{size×size}, sigma)``,
    the 2-D kernel RISE convolves with. Sums to 1.

    Returns:
      ``[size]`` float64 weights.
    """
    radius = int(truncate * float(sigma) + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / float(sigma)) ** 2)
    weights /= weights.sum()
    delta = np.zeros(size)
    delta[size // 2] = 1.0
    padded = np.pad(delta, radius, mode="symmetric")  # numpy 'symmetric' == scipy 'reflect'
    return np.array([np.dot(weights, padded[i : i + 2 * radius + 1]) for i in range(size)])


def fill_for(normalisation: str | None, channels: int, dtype) -> jax.Array:
    """``[C]`` pixel value whose normalisation is 0 (0 when no family is given)."""
    if normalisation is None:
        return jnp.zeros((channels,), dtype)
    if normalisation not in FAMILY_NORMALISATION:
        raise ValueError(
            f"normalisation must be one of {sorted(FAMILY_NORMALISATION)} or None; "
            f"got {normalisation!r}"
        )
    mean = FAMILY_NORMALISATION[normalisation][0]
    if len(mean) != channels:
        raise ValueError(
            f"normalisation {normalisation!r} has {len(mean)} channels; x has {channels}"
        )
    return jnp.asarray(mean, dtype)


def gaussian_blur(x: jax.Array, fill: jax.Array, size: int = 11, sigma: float = 5.0) -> jax.Array:
    """Separable per-channel Gaussian blur with constant padding ``fill``.

    Args:
      x: ``[B, H, W, C]`` images.
      fill: ``[C]`` padding value (the blur is ``blur0(x − fill) + fill`` with zero padding).
      size: kernel size.
      sigma: kernel σ.

    Returns:
      ``[B, H, W, C]`` blurred images.
    """
    channels = x.shape[-1]
    kernel = jnp.asarray(gaussian_kernel_1d(size, sigma), x.dtype)
    shifted = x - fill.reshape(1, 1, 1, channels)
    pad = size // 2
    dims = ("NHWC", "HWIO", "NHWC")
    vertical = jnp.tile(kernel.reshape(size, 1, 1, 1), (1, 1, 1, channels))
    horizontal = jnp.tile(kernel.reshape(1, size, 1, 1), (1, 1, 1, channels))
    out = jax.lax.conv_general_dilated(
        shifted,
        vertical,
        (1, 1),
        ((pad, pad), (0, 0)),
        dimension_numbers=dims,
        feature_group_count=channels,
        precision=jax.lax.Precision.HIGHEST,
    )
    out = jax.lax.conv_general_dilated(
        out,
        horizontal,
        (1, 1),
        ((0, 0), (pad, pad)),
        dimension_numbers=dims,
        feature_group_count=channels,
        precision=jax.lax.Precision.HIGHEST,
    )
    return out + fill.reshape(1, 1, 1, channels)


def make_substrate(x: jax.Array, substrate, normalisation: str | None = None) -> jax.Array:
    """The substrate image for ``x``.

    Args:
      x: ``[B, H, W, C]`` images in ``[0, 1]``.
      substrate: a name from :data:`SUBSTRATES` or an array broadcastable to ``x``.
      normalisation: family for ``"zeros_normalised"`` and the blur's padding.

    Returns:
      ``[B, H, W, C]`` substrate images.
    """
    channels = x.shape[-1]
    if not isinstance(substrate, str):
        return jnp.broadcast_to(jnp.asarray(substrate, x.dtype), x.shape)
    if substrate == "zeros":
        return jnp.zeros_like(x)
    if substrate == "zeros_normalised":
        if normalisation is None:
            raise ValueError(
                'substrate "zeros_normalised" needs normalisation= (a family such as "imagenet")'
            )
        fill = fill_for(normalisation, channels, x.dtype)
        return jnp.broadcast_to(fill.reshape(1, 1, 1, channels), x.shape)
    if substrate == "blur":
        return gaussian_blur(x, fill_for(normalisation, channels, x.dtype))
    if substrate == "mean":
        return jnp.broadcast_to(jnp.mean(x, axis=(1, 2), keepdims=True), x.shape)
    raise ValueError(f"substrate must be one of {SUBSTRATES} or an array; got {substrate!r}")
