"""Complexity of an attribution (SPEC §7): sparseness (Gini) and entropy.

Both are computed on ``|A|`` flattened per input (pixels, or pixels × channels
for a per-channel map), as in Quantus:

* Sparseness (Chalasani et al. 2020): the Gini index of the sorted magnitudes
  ``a_(1) ≤ … ≤ a_(n)``: ``Σ_k (2k − n − 1)·a_(k) / (n·Σ_k a_(k))`` — 0 for a
  uniform map, ``(n−1)/n`` for a single non-zero pixel. Higher is sparser.
* Complexity (Bhatt et al. 2020): the Shannon entropy (nats) of
  ``p = |A| / Σ|A|``; 0 for one pixel, ``log n`` for a uniform map. Lower is
  simpler.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _check_map(attribution: Any) -> jax.Array:
    shape = tuple(np.shape(attribution))
    if len(shape) not in (3, 4):
        raise ValueError(f"attribution must have shape [B, H, W] or [B, H, W, C]; got {shape}")
    if shape[0] == 0:
        raise ValueError(f"attribution is an empty batch (shape {shape})")
    attribution = jnp.asarray(attribution, jnp.float32)
    if not isinstance(attribution, jax.core.Tracer) and not bool(
        jnp.all(jnp.isfinite(attribution))
    ):
        raise ValueError("attribution contains NaN or Inf values")
    return jnp.abs(attribution.reshape(shape[0], -1))


@jax.jit
def _gini(magnitudes: jax.Array) -> jax.Array:
    num = magnitudes.shape[-1]
    ordered = jnp.sort(magnitudes, axis=-1)
    weights = (2.0 * jnp.arange(1, num + 1) - num - 1).reshape(1, num)
    total = jnp.sum(ordered, axis=-1)
    gini = jnp.sum(weights * ordered, axis=-1) / (num * jnp.where(total > 0, total, 1.0))
    return jnp.where(total > 0, gini, 0.0)


@jax.jit
def _entropy(magnitudes: jax.Array) -> jax.Array:
    total = jnp.sum(magnitudes, axis=-1, keepdims=True)
    probs = magnitudes / jnp.where(total > 0, total, 1.0)
    terms = jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0)
    return -jnp.sum(terms, axis=-1)


def sparseness(attribution: Any) -> jax.Array:
    """Gini index of ``|attribution|`` per input (0 for an all-zero map).

    Args:
      attribution: ``[B, H, W]`` or ``[B, H, W, C]``.

    Returns:
      ``[B]`` in ``[0, 1)``; higher is sparser.
    """
    return _gini(_check_map(attribution))


def entropy(attribution: Any) -> jax.Array:
    """Shannon entropy (nats) of the normalised ``|attribution|`` per input.

    Args:
      attribution: ``[B, H, W]`` or ``[B, H, W, C]``.

    Returns:
      ``[B]`` in ``[0, log n]`` (0 for an all-zero map); lower is simpler.
    """
    return _entropy(_check_map(attribution))
