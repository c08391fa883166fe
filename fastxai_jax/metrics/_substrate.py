"""Substrates for perturbation metrics: what a removed pixel becomes.

The vocabulary is :class:`fastxai_jax.substrate.Substrate` (re-exported from
:mod:`fastxai_jax.core`), in ``[0, 1]`` pixel space. The metrics also take
their earlier names, mapped by :func:`fastxai_jax.substrate.as_substrate`:

* ``"zeros"``: ``Substrate("constant", 0.0)``, black (MFABA's evaluation).
* ``"zeros_normalised"``: ``Substrate("family_mean")``, the pixel whose
  normalisation is 0 (RISE's deletion, FEX; ``apply_fn`` normalises itself).
* ``"blur"``: ``Substrate("blur")``, RISE's blur (Gaussian, size 11, σ 5,
  padded with the family's mean, else 0; applied as two 1-D convolutions).
* ``"mean"``: ``Substrate("image_mean")``, each image's per-channel mean colour.
* a custom fill: any array broadcastable to ``[B, H, W, C]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fastxai_jax.substrate import (  # noqa: F401 - re-exported for the metrics and tests
    LEGACY_NAMES,
    Substrate,
    as_substrate,
    fill_for,
    gaussian_blur,
    gaussian_kernel_1d,
)

SUBSTRATES = tuple(LEGACY_NAMES)


def make_substrate(x: jax.Array, substrate, normalisation: str | None = None) -> jax.Array:
    """The substrate image for ``x``.

    Args:
      x: ``[B, H, W, C]`` images in ``[0, 1]``.
      substrate: a :class:`Substrate`, a name from :data:`SUBSTRATES` or an array
        broadcastable to ``x``.
      normalisation: family for ``"family_mean"`` and the blur's padding.

    Returns:
      ``[B, H, W, C]`` substrate images.
    """
    if not isinstance(substrate, str | Substrate):
        return jnp.broadcast_to(jnp.asarray(substrate, x.dtype), x.shape)
    return as_substrate(substrate).image(x, normalisation)
