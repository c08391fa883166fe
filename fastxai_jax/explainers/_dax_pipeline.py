"""DAX's perturbations, network-input pipeline and snapshot post-processing (SPEC §3).

The LIME half (sampling, fill, kernel weights, black-box queries) follows
``lime/lime_image.py`` of the authors' code (``iiscleap/DAX``); the rest is what
their ``lime/student_ntw_learn.py`` (``train``, ``StudentModel.predict_proba``)
does around the two networks, written for JAX so that
:mod:`fastxai_jax.explainers.dax` can offer it as options:

* each minibatch is divided by its own maximum, a random 3/5 (even steps) or
  2/5 (odd steps) of it is converted to their HSV (:func:`rgb_to_hsv_authors`),
  and the batch is multiplied by 255; in the first batch the explained image
  (row 0) is converted on its own and never drawn for the group;
* a snapshot of the explained image's mask is max-pooled by 8, upsampled ×8
  bilinearly, min-max normalised and its border zeroed; the snapshots are then
  averaged and min-max normalised again.

Not reproduced (no effect on the explanation or outside DAX): their validation
batches are half converted to HSV (our validation loss, reported only, sees
none); torch's BatchNorm keeps an unbiased running variance (flax: biased; only
the eval-mode student of the validation loss uses it); their network input is
resized by torchvision (``jax.image.resize`` here); their evaluation harness
divides each query batch by its maximum before the classifier (a property of
the black box, i.e. of ``apply_fn``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fastxai_jax.core import ApplyFn, Params
from fastxai_jax.models.dax_nets import minmax_normalise
from fastxai_jax.models.pooling import max_pool

HSV_EPS = 1e-10  # the authors' epsilon in rgb2hsv
HSV_FRACTIONS = (3 / 5, 2 / 5)  # share of a batch converted on even / odd steps


def lime_kernel_weights(z: jax.Array, kernel_width: float = 0.25) -> jax.Array:
    """LIME weights ``sqrt(exp(−d²/width²))``, ``d`` = cosine distance to all-ones.

    Args:
      z: ``[N, K]`` binary perturbation vectors.
      kernel_width: kernel width (DAX/LIME: 0.25).

    Returns:
      ``[N]`` weights in ``(0, 1]``.
    """
    ones = jnp.ones((z.shape[-1],), z.dtype)
    norm = jnp.linalg.norm(z, axis=-1) * jnp.sqrt(float(z.shape[-1]))
    cosine = (z @ ones) / jnp.maximum(norm, 1e-12)
    distance = 1.0 - cosine
    return jnp.sqrt(jnp.exp(-(distance**2) / kernel_width**2))


def sample_perturbations(key: jax.Array, num_samples: int, valid: jax.Array) -> jax.Array:
    """``[N, K]`` float {0, 1} vectors, row 0 all-ones; invalid segments stay 0."""
    z = jax.random.bernoulli(key, 0.5, (num_samples, valid.shape[0])).astype(jnp.float32)
    z = z.at[0].set(1.0)
    return z * valid[None, :]


def segment_means(x: jax.Array, labels: jax.Array, num_segments: int) -> jax.Array:
    """Per-segment mean colour ``[K, C]`` of ``x: [H, W, C]`` with ``labels: [H, W]``."""
    flat = jnp.reshape(x, (-1, x.shape[-1]))
    ids = jnp.reshape(labels, (-1,))
    sums = jax.ops.segment_sum(flat, ids, num_segments)
    counts = jax.ops.segment_sum(jnp.ones_like(ids, x.dtype), ids, num_segments)
    return sums / jnp.maximum(counts, 1.0)[:, None]


def perturb(x: jax.Array, labels: jax.Array, fill: jax.Array, z: jax.Array) -> jax.Array:
    """Images ``[N, H, W, C]``: segment ``k`` kept where ``z[:, k] = 1``, else ``fill``.

    Args:
      x: ``[H, W, C]``; labels: ``[H, W]``; fill: ``[H, W, C]`` off-segment pixels;
      z: ``[N, K]`` binary vectors.
    """
    keep = z[:, labels][..., None]
    return keep * x[None] + (1.0 - keep) * fill[None]


def segment_fill(
    x: jax.Array, labels: jax.Array, num_segments: int, fill: str | float
) -> jax.Array:
    """The ``[H, W, C]`` image an "off" segment is replaced by (SPEC §3).

    Args:
      x: ``[H, W, C]`` image; labels: ``[H, W]`` segment ids in ``[0, num_segments)``.
      num_segments: ``K`` (static).
      fill: ``"grey"`` (each segment one value, the mean of its channel means:
        the authors' code), ``"mean"`` (its own mean colour) or a constant.
    """
    if fill == "grey":
        grey = jnp.mean(segment_means(x, labels, num_segments), axis=-1, keepdims=True)
        return jnp.broadcast_to(grey[labels], x.shape)
    if fill == "mean":
        return segment_means(x, labels, num_segments)[labels]
    return jnp.full_like(x, fill)


def _resize(images: jax.Array, size: int | None, method: str) -> jax.Array:
    if size is None or images.shape[-3:-1] == (size, size):
        return images
    shape = images.shape[:-3] + (size, size) + images.shape[-1:]
    return jax.image.resize(images, shape, method=method)


def query_probabilities(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    labels: jax.Array,
    fill: jax.Array,
    z: jax.Array,
    target: jax.Array,
    chunk: int,
) -> jax.Array:
    """Black-box ``p_f(target | x̃)`` for every perturbation, ``[N]``, no gradient.

    Queries go in chunks of ``chunk`` (``lax.map``); the outputs are wrapped in
    ``stop_gradient`` and no derivative of ``apply_fn`` is ever requested.
    """
    params = jax.lax.stop_gradient(params)

    def probs(z_rows):
        logits = apply_fn(params, perturb(x, labels, fill, z_rows))
        return jax.nn.softmax(logits, axis=-1)[:, target]

    num = z.shape[0]
    chunk = min(chunk, num)
    num_chunks = -(-num // chunk)
    padded = jnp.pad(z, ((0, num_chunks * chunk - num), (0, 0)))
    p = jax.lax.map(probs, jnp.reshape(padded, (num_chunks, chunk, z.shape[1])))
    return jax.lax.stop_gradient(jnp.reshape(p, (-1,))[:num])


def rgb_to_hsv_authors(x: jax.Array, groups: jax.Array, num_groups: int = 2) -> jax.Array:
    """The authors' ``rgb2hsv`` applied to the rows of ``x`` that ``groups`` selects.

    Their hue is ``60·(g−r)/Δ + 60`` where blue is the smallest channel,
    ``60·(b−g)/Δ + 180`` where red is, ``60·(r−b)/Δ + 300`` where green is
    (``Δ = max − min + 1e-10``, first minimum on ties); ``s = Δ/(max + 1e-10)``,
    ``v = max``. Each of h, s, v is then divided by its maximum over *all* rows
    converted together: the result of one row depends on the other rows of its
    group.

    Args:
      x: ``[M, H, W, 3]`` RGB batch.
      groups: ``[M]`` int; 0 leaves a row unchanged, ``g ≥ 1`` converts it with
        the other rows of group ``g`` (the authors' two calls: a random part of
        the batch, and the explained image alone).
      num_groups: largest group id (static).

    Returns:
      ``[M, H, W, 3]``: converted rows in (h, s, v) order, others unchanged.
    """
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    high, low = jnp.max(x, axis=-1), jnp.min(x, axis=-1)
    spread = high - low + HSV_EPS
    hue_by_min = jnp.stack(
        [
            60.0 * (b - g) / spread + 180.0,  # red smallest
            60.0 * (r - b) / spread + 300.0,  # green smallest
            60.0 * (g - r) / spread + 60.0,  # blue smallest
        ],
        axis=-1,
    )
    argmin = jnp.argmin(x, axis=-1)
    hue = jnp.take_along_axis(hue_by_min, argmin[..., None], axis=-1)[..., 0]
    hsv = jnp.stack([hue, spread / (high + HSV_EPS), high], axis=-1)
    out = x
    for group in range(1, num_groups + 1):
        member = (groups == group)[:, None, None, None]
        group_max = jnp.max(jnp.where(member, hsv, -jnp.inf), axis=(0, 1, 2), keepdims=True)
        out = jnp.where(member, hsv / group_max, out)
    return out


def hsv_groups(key: jax.Array, batch_size: int, step: jax.Array, first: jax.Array) -> jax.Array:
    """The authors' random choice of rows to convert to HSV in one minibatch.

    ``int(M·3/5)`` rows on even steps and ``int(M·2/5)`` on odd ones (group 1);
    when ``first`` (the batch whose row 0 is the explained image), row 0 is
    converted alone (group 2) and excluded from the draw.

    Args:
      key: PRNG key of this step.
      batch_size: ``M`` (static).
      step: step index within the epoch (its parity picks the share).
      first: whether row 0 is the explained image.

    Returns:
      ``[M]`` int32 groups for :func:`rgb_to_hsv_authors`.
    """
    rank = jnp.argsort(jax.random.permutation(key, batch_size))  # position of each row
    row = jnp.arange(batch_size)
    # with row 0 removed from the order, later rows move up by one
    rank_without_0 = jnp.where(row == 0, batch_size, rank - (rank > rank[0]))
    rank = jnp.where(first, rank_without_0, rank)
    count = jnp.where(
        step % 2 == 0, int(batch_size * HSV_FRACTIONS[0]), int(batch_size * HSV_FRACTIONS[1])
    )
    groups = jnp.where(rank < count, 1, 0)
    return jnp.where(first & (row == 0), 2, groups).astype(jnp.int32)


def network_inputs(
    images: jax.Array, groups: jax.Array | None, batch_max: bool, input_scale: float
) -> jax.Array:
    """What the networks see: ``images`` ÷ their max (optional), HSV rows, × ``input_scale``.

    Args:
      images: ``[M, h, w, 3]`` perturbed images at the network size.
      groups: ``[M]`` HSV groups (:func:`hsv_groups`) or ``None`` (no augmentation).
      batch_max: divide by the batch's maximum first (the authors' code).
      input_scale: final factor (authors: 255).
    """
    if batch_max:
        images = images / jnp.max(images)
    if groups is not None:
        images = rgb_to_hsv_authors(images, groups)
    return images * input_scale


def _zero_border(mask: jax.Array, fraction: float) -> jax.Array:
    """Zeroes a border of ``round(fraction · side)`` pixels (at least one) of ``[h, w]``."""
    h, w = mask.shape
    bh, bw = max(1, round(fraction * h)), max(1, round(fraction * w))
    rows = (jnp.arange(h) >= bh) & (jnp.arange(h) < h - bh)
    cols = (jnp.arange(w) >= bw) & (jnp.arange(w) < w - bw)
    return mask * (rows[:, None] & cols[None, :]).astype(mask.dtype)


def smooth_snapshot(mask: jax.Array, pool: int, border: float) -> jax.Array:
    """One snapshot as the authors save it: max-pool, bilinear ×``pool``, min-max, border.

    Args:
      mask: ``[h, w]`` generator mask of the explained image.
      pool: pool window and upsampling factor (authors: 8).
      border: fraction of the side zeroed at each edge (authors: 7/128; 0 = none).
    """
    h, w = mask.shape
    pooled = max_pool(mask[None, :, :, None], (pool, pool))[0, :, :, 0]
    # torch's Upsample(bilinear, align_corners=False) == half-pixel bilinear
    up = jax.image.resize(pooled, (h, w), method="bilinear", antialias=False)
    up = minmax_normalise(up, axes=(0, 1))
    return _zero_border(up, border) if border > 0 else up


def combine_snapshots(snapshots: jax.Array, smoothing: str, pool: int, border: float) -> jax.Array:
    """The explanation from ``[S, h, w]`` snapshots (SPEC §3, last step).

    ``"bilinear"`` (the authors' code): each snapshot smoothed and its border
    zeroed (:func:`smooth_snapshot`), then mean and min-max. ``"none"``: the raw
    masks' mean, min-max, then the border zeroed once.
    """
    if smoothing == "bilinear":
        snapshots = jax.vmap(lambda m: smooth_snapshot(m, pool, border))(snapshots)
        return minmax_normalise(jnp.mean(snapshots, axis=0), axes=(0, 1))
    mask = minmax_normalise(jnp.mean(snapshots, axis=0), axes=(0, 1))
    return _zero_border(mask, border) if border > 0 else mask
