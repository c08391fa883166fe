"""Random attribution: the floor every method should beat."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fastxai_jax.core import ApplyFn, Params, check_images


def random_attribution(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    target: jax.Array,
    *,
    key: jax.Array,
    per_channel: bool = False,
) -> jax.Array:
    """Uniform ``[0, 1)`` noise of the attribution's shape; no target-model query.

    Args:
      apply_fn, params, target: unused (kept for the shared signature).
      x: ``[B, H, W, C]`` inputs (only the shape is used).
      key: ``jax.random`` key (required).
      per_channel: return ``[B, H, W, C]`` instead of ``[B, H, W]``.

    Returns:
      ``[B, H, W]`` (or ``[B, H, W, C]``) float32.
    """
    del apply_fn, params, target
    check_images(x, "x")
    if key is None:
        raise ValueError("key is required for the random attribution")
    shape = tuple(x.shape) if per_channel else tuple(x.shape[:3])
    return jax.random.uniform(key, shape, jnp.float32)
