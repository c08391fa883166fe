"""RISE: randomized input sampling for explanation (Petsiuk et al., BMVC 2018).

``saliency = Σ_i p_f(ŷ | x ⊙ M_i) · M_i / (N · p)`` over ``N`` random masks
``M_i``. Each mask is an ``s × s`` grid of Bernoulli(p) cells, bilinearly
upsampled to ``(s + 1)·C`` pixels per side (``C = ceil(H / s)`` the cell size)
and cropped to ``H × W`` at a random shift in ``[0, C)`` — the paper's
construction, which gives smooth masks whose cell borders fall anywhere.

Target queries are chunked: a ``lax.scan`` over chunks of ``chunk_size`` masks
builds ``chunk_size · B`` masked images, scores them in ONE batched
``apply_fn`` call and accumulates the weighted masks in the carry, so memory is
bounded by one chunk (unlike ``lax.map``, nothing per mask is stacked).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fastxai_jax.core import ApplyFn, Cost, Params, check_images
from fastxai_jax.explainers._masks import apply_mask, fill_value_01, upsample_bilinear
from fastxai_jax.substrate import Substrate, explainer_fill


def _one_mask(key, image_hw, grid_size, p_keep):
    height, width = image_hw
    cell_h, cell_w = math.ceil(height / grid_size), math.ceil(width / grid_size)
    up_h, up_w = (grid_size + 1) * cell_h, (grid_size + 1) * cell_w
    grid_key, shift_h_key, shift_w_key = jax.random.split(key, 3)
    grid = jax.random.bernoulli(grid_key, p_keep, (grid_size, grid_size)).astype(jnp.float32)
    shift_h = jax.random.randint(shift_h_key, (), 0, cell_h)
    shift_w = jax.random.randint(shift_w_key, (), 0, cell_w)
    up = upsample_bilinear(grid, (up_h, up_w))
    return jnp.clip(jax.lax.dynamic_slice(up, (shift_h, shift_w), (height, width)), 0.0, 1.0)


def rise_masks_from_keys(
    keys: jax.Array, image_hw: tuple[int, int], *, grid_size: int = 8, p_keep: float = 0.5
) -> jax.Array:
    """One RISE mask per key: ``keys [N]`` → ``[N, H, W]`` (see :func:`rise_masks`)."""
    return jax.vmap(lambda k: _one_mask(k, image_hw, grid_size, p_keep))(keys)


def rise_masks(
    key: jax.Array,
    num_masks: int,
    image_hw: tuple[int, int],
    *,
    grid_size: int = 8,
    p_keep: float = 0.5,
) -> jax.Array:
    """Draws the RISE masks that :func:`rise` uses for ``key``.

    Args:
      key: PRNG key (mask ``i`` is drawn from ``jax.random.split(key, N)[i]``,
        so the masks do not depend on the chunk size).
      num_masks: ``N``.
      image_hw: ``(H, W)``.
      grid_size: ``s``, cells per side of the random grid.
      p_keep: ``p``, probability that a cell is kept.

    Returns:
      ``[N, H, W]`` float masks in ``[0, 1]``.
    """
    keys = jax.random.split(key, num_masks)
    return rise_masks_from_keys(keys, image_hw, grid_size=grid_size, p_keep=p_keep)


def image_keys(key: jax.Array, start: int, batch_size: int) -> jax.Array:
    """Per-image keys ``fold_in(key, start + i)``, ``i < batch_size``, for :func:`rise`.

    Passing these for the batch of images ``start .. start + batch_size - 1`` of a
    dataset makes every image's masks depend on its index only, so the maps do
    not change with the batch size (issue 20).
    """
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(batch_size))


def _is_key_batch(key, batch: int) -> bool:
    """True for ``[B]`` typed keys (or ``[B, 2]`` raw uint32 keys); False for one key."""
    shape = jnp.shape(key)
    if jax.dtypes.issubdtype(jnp.result_type(key), jax.dtypes.prng_key):
        if shape not in ((), (batch,)):
            raise ValueError(f"key must be one key or {batch} keys (one per image); got {shape}")
        return shape == (batch,)
    if shape not in ((2,), (batch, 2)):
        raise ValueError(f"key must be one key or {batch} keys (one per image); got {shape}")
    return shape == (batch, 2)


def _validate(x, target, num_masks, grid_size, p_keep, chunk_size) -> None:
    check_images(x, "x")
    if not isinstance(num_masks, int) or num_masks <= 0:
        raise ValueError(f"num_masks must be a positive int; got {num_masks!r}")
    if not isinstance(grid_size, int) or grid_size <= 0:
        raise ValueError(f"grid_size must be a positive int; got {grid_size!r}")
    if not 0.0 < float(p_keep) <= 1.0:
        raise ValueError(f"p_keep must lie in (0, 1]; got {p_keep!r}")
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    if jnp.shape(target) != (x.shape[0],):
        raise ValueError(f"target must have shape ({x.shape[0]},); got {jnp.shape(target)}")


def rise(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    target: jax.Array,
    *,
    key: jax.Array,
    num_masks: int = 4000,
    grid_size: int = 8,
    p_keep: float = 0.5,
    chunk_size: int = 100,
    fill: float | Substrate = 0.0,
    family: str | None = None,
) -> jax.Array:
    """RISE saliency maps for a batch (Petsiuk et al. 2018).

    With one ``key`` the same ``N`` masks are used for every image of the batch
    (as in the authors' code); with ``[B]`` keys (:func:`image_keys`) image ``b``
    gets its own masks from ``key[b]``, so a dataset explained batch by batch
    gives maps independent of the batch size.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits [B, K]`` on ``[0, 1]`` images.
      params: target parameters.
      x: ``[B, H, W, C]`` images in ``[0, 1]``.
      target: ``[B]`` int classes to explain.
      key: PRNG key for the masks, or ``[B]`` keys, one per image.
      num_masks: ``N`` (cost: N target forwards per image).
      grid_size: ``s`` cells per side.
      p_keep: ``p``.
      chunk_size: masks per batched target call (the call sees ``chunk_size·B`` images).
      fill: with ``family`` given, masked pixels are set to ``fill`` in that
        family's normalised space; with ``family=None`` the ``[0, 1]`` image is
        multiplied by the mask (black substrate). Or a
        :class:`~fastxai_jax.substrate.Substrate` of one colour, converted with
        ``to_fill`` (to ``family``'s normalised space, or to a ``[0, 1]`` colour
        without ``family``): ``Substrate("family_mean")`` is ``fill=0.0``.
      family: normalisation family of the target (see ``models.normalization``).

    Returns:
      ``[B, H, W]`` saliency (an estimate of ``E[p_f(ŷ | x ⊙ M) | M(u) = 1]``).
    """
    _validate(x, target, num_masks, grid_size, p_keep, chunk_size)
    batch, height, width, channels = x.shape
    num_chunks = math.ceil(num_masks / chunk_size)
    if family is not None:
        fill01 = fill_value_01(explainer_fill(fill, "normalised", family), family, x.dtype)
    elif isinstance(fill, Substrate):
        fill01 = jnp.full((channels,), explainer_fill(fill, "pixel"), x.dtype)
    else:
        fill01 = jnp.zeros((channels,), x.dtype)
    logits_shape = jax.eval_shape(apply_fn, params, x).shape
    if len(logits_shape) != 2 or logits_shape[0] != batch:
        raise ValueError(f"apply_fn must return logits of shape ({batch}, K); got {logits_shape}")
    per_image = _is_key_batch(key, batch)
    # Mask i comes from split(key, N)[i]; the padding of a partial last chunk
    # reuses key 0 and gets weight 0.
    index = jnp.concatenate(
        [jnp.arange(num_masks), jnp.zeros((num_chunks * chunk_size - num_masks,), jnp.int32)]
    )
    if per_image:  # [B] keys -> [num_chunks, chunk, B] keys
        mask_keys = jax.vmap(lambda k: jax.random.split(k, num_masks)[index])(key)
        mask_keys = jnp.moveaxis(mask_keys, 0, 1)
    else:
        mask_keys = jax.random.split(key, num_masks)[index]
    chunk_keys = mask_keys.reshape((num_chunks, chunk_size) + mask_keys.shape[1:])
    target = jnp.asarray(target, jnp.int32)

    def body(saliency, inputs):
        keys, chunk_index = inputs
        if per_image:  # [chunk, B, H, W]
            masks = jax.vmap(
                lambda k: rise_masks_from_keys(
                    k, (height, width), grid_size=grid_size, p_keep=p_keep
                )
            )(keys)
        else:  # [chunk, 1, H, W], shared by the batch
            masks = rise_masks_from_keys(keys, (height, width), grid_size=grid_size, p_keep=p_keep)[
                :, None
            ]
        # The last chunk may be partial: padded masks get weight 0.
        valid = (chunk_index * chunk_size + jnp.arange(chunk_size)) < num_masks
        masked = apply_mask(x[None], masks, fill01)  # [chunk, B, H, W, C]
        logits = apply_fn(params, masked.reshape((chunk_size * batch, height, width, channels)))
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        probs = probs.reshape((chunk_size, batch, -1))
        scores = jnp.take_along_axis(probs, target[None, :, None], axis=-1)[..., 0]
        scores = scores * valid[:, None].astype(scores.dtype)
        masks = jnp.broadcast_to(masks, (chunk_size, batch, height, width))
        return saliency + jnp.einsum("nb,nbhw->bhw", scores, masks), None

    init = jnp.zeros((batch, height, width), jnp.float32)
    saliency, _ = jax.lax.scan(body, init, (chunk_keys, jnp.arange(num_chunks)))
    return saliency / (num_masks * p_keep)


def rise_cost(num_masks: int = 4000, **_: object) -> Cost:
    """RISE spends ``num_masks`` target forwards and no backward per input."""
    return Cost(forward=int(num_masks), backward=0)
