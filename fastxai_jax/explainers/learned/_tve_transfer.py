"""TVE's transfer rule: per-cell embeddings and a linear head to a map (SPEC §5).

A downstream classifier on TVE's encoder brings its linear head ``(W, b)``; each
predicted cell embedding is mapped to logits, the explained class's logit taken,
and the map is ``λ_pos·pos − λ_neg·neg``, average-pooled with a ``(2r+1)``
window, min-max normalised and upsampled. Re-exported by
:mod:`fastxai_jax.explainers.learned.tve`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from fastxai_jax.core import Params
from fastxai_jax.explainers._masks import normalise_images, upsample_bilinear, upsample_nearest
from fastxai_jax.models import maps

if TYPE_CHECKING:
    from fastxai_jax.explainers.learned._tve_config import TveConfig

EncoderFn = Callable[[Params, jax.Array], jax.Array]
"""``encoder_fn(encoder_params, x01 [B, H, W, C]) -> embeddings [B, E]``."""


def _avg_pool_cells(grid_map: jax.Array, radius: int) -> jax.Array:
    """Mean over the valid ``(2r+1)²`` neighbourhood of each cell, ``[B, S, S]``."""
    window = (1, 2 * radius + 1, 2 * radius + 1)
    pads = ((0, 0), (radius, radius), (radius, radius))
    total = jax.lax.reduce_window(grid_map, 0.0, jax.lax.add, window, (1, 1, 1), pads)
    count = jax.lax.reduce_window(
        jnp.ones_like(grid_map), 0.0, jax.lax.add, window, (1, 1, 1), pads
    )
    return total / count


def transfer_map(
    config: TveConfig,
    pos: jax.Array,
    neg: jax.Array,
    head: Params,
    target: jax.Array | None = None,
) -> jax.Array:
    """Cell map from predicted embeddings and a linear head: ``[B, S, S]`` in ``[0, 1]``,
    image layout (row = image row) whatever ``config.cell_order``.

    ``λ_pos·logit_c(pos) − λ_neg·logit_c(neg)`` per cell (bias included, as the
    authors' ``generate_attr``), average-pooled over the valid ``(2r+1)²``
    neighbourhood (``config.pool``; torch ``avg_pool2d(count_include_pad=False)``),
    min-max normalised per map or, ``normalise="row"``, per row of the token grid
    (the authors' quirk).

    Args:
      pos, neg: ``[B, S², E]`` predicted embeddings in ``config.cell_order``.
      head: ``{"kernel": [E, K], "bias": [K]}``.
      target: ``[B]`` classes or ``None`` (largest mean pos-branch cell logit).
    """
    pos_logits = pos @ head["kernel"] + head["bias"][None, None, :]  # [B, S², K]
    neg_logits = neg @ head["kernel"] + head["bias"][None, None, :]
    if target is None:
        target = jnp.argmax(jnp.mean(pos_logits, axis=1), axis=-1)
    index = jnp.arange(pos.shape[0])
    score = (
        config.lam_pos * pos_logits[index, :, target]
        - config.lam_neg * neg_logits[index, :, target]
    )
    grid_map = jnp.reshape(score, (pos.shape[0], config.grid, config.grid))  # token layout
    if config.pool:
        grid_map = _avg_pool_cells(grid_map, config.radius)
    axes = (2,) if config.normalise == "row" else (1, 2)
    grid_map = maps.minmax_normalise(grid_map, axes, eps=1e-12, eps_mode="add")
    return jnp.swapaxes(grid_map, 1, 2) if config.cell_order == "column" else grid_map


def embeddings_to_map(
    config: TveConfig,
    pos: jax.Array,
    neg: jax.Array,
    head: Params,
    target: jax.Array | None,
    size: tuple[int, int],
) -> jax.Array:
    """:func:`transfer_map` upsampled (``config.upsample``) to pixels ``[B, *size]``:
    the map of any per-cell embeddings, predicted or :func:`oracle_embeddings`."""
    grid_map = transfer_map(config, pos, neg, head, target)
    if config.upsample == "nearest":
        return upsample_nearest(grid_map, size)
    return upsample_bilinear(grid_map, size)


def encoder_from_module(module: nn.Module, family: str, output: str = "pre_logits") -> EncoderFn:
    """``encoder_fn(variables, x01) -> aux[output]`` of a Flax target (``[B, E]``)."""

    def encoder_fn(variables, x01):
        _, aux = module.apply(variables, normalise_images(x01, family), train=False)
        return aux[output]

    return encoder_fn


def linear_head(variables: Params, name: str = "head") -> Params:
    """``{"kernel", "bias"}`` of a Flax target's final Dense layer ``name``."""
    return dict(variables["params"][name])
