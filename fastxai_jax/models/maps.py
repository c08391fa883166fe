"""Array operations on ``[..., h, w]`` maps shared by models, explainers and metrics.

One implementation each of nearest-neighbour upsampling of a patch grid and of
min-max normalisation; ``explainers/_masks.py``, ``models/dax_nets.py`` and
``metrics/localisation.py`` import them from here (models sit below explainers
and metrics, so every layer can).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPS_MODES = ("floor", "add")


def upsample_nearest(grid: jax.Array, image_hw: tuple[int, int]) -> jax.Array:
    """Nearest-neighbour upsampling of patch values to pixels.

    Args:
      grid: ``[..., gh, gw]`` per-patch values; ``gh``/``gw`` must divide ``H``/``W``.
      image_hw: ``(H, W)``.

    Returns:
      ``[..., H, W]``: each patch value repeated over its pixels.
    """
    gh, gw = grid.shape[-2:]
    height, width = image_hw
    if height % gh or width % gw:
        raise ValueError(f"grid {gh}x{gw} does not divide the image size {height}x{width}")
    out = jnp.repeat(grid, height // gh, axis=-2)
    return jnp.repeat(out, width // gw, axis=-1)


def minmax_normalise(
    values: jax.Array,
    axes: tuple[int, ...] = (-2, -1),
    *,
    eps: float = 1e-12,
    eps_mode: str = "floor",
) -> jax.Array:
    """``(v − min) / range`` over ``axes`` (per remaining index).

    Args:
      values: any array.
      axes: the axes the min and max run over (e.g. ``(1, 2)`` of ``[B, H, W]``).
      eps: guards a constant map.
      eps_mode: ``"floor"``: ``range = max(max − min, eps)`` (a constant map →
        0; the localisation metrics); ``"add"``: ``range = max − min + eps``
        (DAX's mask generator, as the authors' code).

    Returns:
      ``values``' shape, in ``[0, 1]``.
    """
    if eps_mode not in EPS_MODES:
        raise ValueError(f"eps_mode must be one of {EPS_MODES}; got {eps_mode!r}")
    low = jnp.min(values, axis=axes, keepdims=True)
    high = jnp.max(values, axis=axes, keepdims=True)
    if eps_mode == "floor":
        return (values - low) / jnp.maximum(high - low, eps)
    return (values - low) / (high - low + eps)
