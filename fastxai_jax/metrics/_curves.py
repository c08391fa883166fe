"""The perturbation-curve engine shared by the public metrics in ``perturbation.py``.

Validation of inputs and options, and :func:`curves`: every curve of a
metric (insertion and deletion, or POS and NEG) in one jitted computation.
Features are ranked once; the image at step ``t`` is ``where(rank < k_t, a,
b)``; steps are evaluated ``chunk_size`` at a time per forward pass with
``lax.map``, so memory is bounded by ``chunk_size × rows`` images.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.core import check_choice, check_images, check_range, resolve_target
from fastxai_jax.metrics import _ranking, _substrate

SCORES = ("prob", "top1")
DEFAULT_IMAGES_PER_FORWARD = 128

# ----------------------------------------------------------------------------- validation


def finite_float(values: Any, name: str) -> jax.Array:
    """``values`` as a float array (ints become float32).

    Raises ``ValueError`` naming ``name`` if a concrete array holds NaN or Inf
    (a traced one is passed through unchecked).
    """
    values = jnp.asarray(values)
    if not jnp.issubdtype(values.dtype, jnp.floating):
        values = values.astype(jnp.float32)
    if not isinstance(values, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(values))):
        raise ValueError(f"{name} contains NaN or Inf values")
    return values


def check_attribution(attribution: Any, x: Any, granularity: str, per_channel: bool) -> jax.Array:
    """Checks a map's shape against ``x`` and its values; returns it as a float array.

    A ``[B, H, W, C]`` map is summed over channels unless ``per_channel``.
    """
    shape, x_shape = tuple(np.shape(attribution)), tuple(np.shape(x))
    if granularity == "grid":
        ok = len(shape) == 3 and shape[0] == x_shape[0]
        ok = ok and 0 < shape[1] <= x_shape[1] and 0 < shape[2] <= x_shape[2]
        expected = f"[B, gh, gw] with B = {x_shape[0]}, gh ≤ {x_shape[1]}, gw ≤ {x_shape[2]}"
    elif per_channel:
        ok, expected = shape == x_shape, f"{x_shape} (per-channel ranking)"
    else:
        ok = shape in (x_shape[:3], x_shape)
        expected = f"{x_shape[:3]} (or {x_shape}, summed over channels)"
    if not ok:
        raise ValueError(f"attribution must have shape {expected}; got {shape}")
    attribution = finite_float(attribution, "attribution")
    if attribution.ndim == 4 and not per_channel:
        attribution = jnp.sum(attribution, axis=-1)
    return attribution


def _check_inputs(apply_fn, params, x, attribution, target, granularity, per_channel):
    """Validates ``x``, the map and a given ``target``.

    ``target=None`` stays ``None``: ŷ is then computed inside the jitted curve
    (an eager forward pass of a large model costs more than the whole check).
    """
    check_images(x, "x")
    check_range(x, "x")
    attribution = check_attribution(attribution, x, granularity, per_channel)
    if target is not None:
        target = resolve_target(apply_fn, params, x, target)  # shape/range checks, no forward
    return jnp.asarray(x), attribution, target


def _check_substrate(substrate: Any, name: str, x: jax.Array, normalisation: str | None) -> None:
    """A substrate is a ``Substrate``, a known name (with a family where needed) or a
    broadcastable array."""
    if isinstance(substrate, _substrate.Substrate):
        if substrate.kind == "family_mean" and normalisation is None:
            raise ValueError(f'{name} of kind "family_mean" needs normalisation= (a family)')
    elif isinstance(substrate, str):
        check_choice(name, substrate, _substrate.SUBSTRATES)
        if substrate == "zeros_normalised" and normalisation is None:
            raise ValueError(
                f'{name}="zeros_normalised" needs normalisation= (a family such as "imagenet")'
            )
    else:
        try:
            np.broadcast_shapes(np.shape(substrate), np.shape(x))
        except ValueError:
            raise ValueError(
                f"{name} must be a name or an array broadcastable to x {np.shape(x)}; "
                f"got shape {np.shape(substrate)}"
            ) from None
    if normalisation is not None:
        _substrate.fill_for(normalisation, np.shape(x)[-1], jnp.float32)


def positive_int(value: Any, name: str) -> int:
    """``int(value)``, or ``ValueError`` naming ``name`` unless a positive int."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- the core


def score_logits(logits: jax.Array, target: jax.Array, score: str) -> jax.Array:
    """``[..., B, K]`` logits → ``[..., B]`` scores of ``target [B]``."""
    target = jnp.broadcast_to(target.reshape((1,) * (logits.ndim - 2) + (-1,)), logits.shape[:-1])
    if score == "top1":
        return (jnp.argmax(logits, axis=-1) == target).astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.take_along_axis(probs, target[..., None], axis=-1)[..., 0]


class CurveSpec(NamedTuple):
    """Everything static about one batch of curves (the jit's cache key).

    ``plans`` holds ``(mode, substrate, negate)`` per curve (a ``None`` substrate
    takes the matching array of ``custom``), ``counts`` the features kept or
    removed at each point, ``chunk_size`` the points per forward.
    """

    plans: tuple
    counts: tuple
    chunk_size: int
    score: str
    granularity: str
    patch_size: Any
    tie_break: str
    normalisation: Any


@functools.partial(jax.jit, static_argnames=("apply_fn", "spec"))
def _curves(apply_fn, params, x, attribution, target, key, custom, *, spec: CurveSpec):
    """All curves of ``spec.plans`` in one computation.

    Returns ``[len(plans), B, len(counts)]`` scores.
    """
    plans, counts, chunk_size = spec.plans, spec.counts, spec.chunk_size
    batch, height, width, channels = x.shape
    ranks = {}
    for negate in sorted({plan[2] for plan in plans}):
        ranks[negate], _ = _ranking.pixel_ranks(
            attribution,
            (height, width),
            granularity=spec.granularity,
            patch_size=spec.patch_size,
            tie_break=spec.tie_break,
            key=key,
            negate=negate,
        )
    on, off, rank_rows = [], [], []
    for (mode, substrate, negate), fill in zip(plans, custom, strict=True):
        base = _substrate.make_substrate(
            x, fill if substrate is None else substrate, spec.normalisation
        )
        on.append(x if mode == "insertion" else base)
        off.append(base if mode == "insertion" else x)
        rank_rows.append(ranks[negate])
    on, off, rank_all = (jnp.concatenate(v, axis=0) for v in (on, off, rank_rows))
    if target is None:
        target = jnp.argmax(apply_fn(params, x), axis=-1).astype(jnp.int32)
    target_all = jnp.tile(target, len(plans))
    rows = on.shape[0]

    num_points = len(counts)
    num_chunks = math.ceil(num_points / chunk_size)
    padded = tuple(counts) + (counts[-1],) * (num_chunks * chunk_size - num_points)
    k_chunks = jnp.asarray(padded, jnp.int32).reshape(num_chunks, chunk_size)

    def one_chunk(k_chunk):
        keep = rank_all[None] < k_chunk.reshape(chunk_size, 1, 1, 1, 1)  # [c, R, H, W, Cr]
        images = jnp.where(keep, on[None], off[None])  # [c, R, H, W, C]
        logits = apply_fn(params, images.reshape(chunk_size * rows, height, width, channels))
        return score_logits(logits.reshape(chunk_size, rows, -1), target_all, spec.score)  # [c, R]

    scores = jax.lax.map(one_chunk, k_chunks).reshape(num_chunks * chunk_size, rows)
    return scores[:num_points].T.reshape(len(plans), batch, num_points)


def run_curves(
    apply_fn,
    params,
    x,
    attribution,
    target,
    plans,
    *,
    granularity,
    patch_size,
    num_steps,
    step_size,
    score,
    tie_break,
    key,
    chunk_size,
    normalisation,
    per_channel,
    counts=None,
):
    """Validates the shared options and runs :func:`_curves`; returns (scores, counts, F)."""
    check_choice("granularity", granularity, _ranking.GRANULARITIES)
    check_choice("score", score, SCORES)
    check_choice("tie_break", tie_break, _ranking.TIE_BREAKS)
    if per_channel and granularity == "grid":
        raise ValueError('per_channel ranking needs a pixel or patch granularity, not "grid"')
    if granularity == "patch":
        patch_size = positive_int(patch_size, "patch_size")
    else:
        patch_size = 1
    if tie_break == "random" and key is None:
        raise ValueError('tie_break="random" needs key=jax.random.key(...)')
    x, attribution, target = _check_inputs(
        apply_fn, params, x, attribution, target, granularity, per_channel
    )
    for mode, substrate, _ in plans:
        _check_substrate(substrate, f"{mode} substrate", x, normalisation)
    if granularity == "patch":
        height, width = x.shape[1:3]
        if patch_size > min(height, width) or height % patch_size or width % patch_size:
            raise ValueError(
                f"patch_size must divide the image's sides {(height, width)} (and not exceed "
                f"them); got {patch_size}"
            )
    grid_hw = tuple(attribution.shape[1:3])
    _, num_features = _ranking.feature_index_map(x.shape[1:3], granularity, patch_size, grid_hw)
    if counts is None:
        if num_steps is not None and step_size is not None:
            raise ValueError("give num_steps or step_size, not both")
        if num_steps is None and step_size is None:
            if granularity == "pixel":
                step_size = 224  # RISE: 224 pixels a step (224 steps on 224²)
            else:
                num_steps = 10  # FEX: 10 steps of patches
        if step_size is not None:
            step_size = positive_int(step_size, "step_size")
        else:
            num_steps = positive_int(num_steps, "num_steps")
            if num_steps > num_features:
                raise ValueError(
                    f"num_steps must be at most the number of features ranked ({num_features} "
                    f"{granularity}s); got {num_steps}"
                )
        counts = _ranking.step_counts(num_features, num_steps, step_size)
    rows = x.shape[0] * len(plans)
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_IMAGES_PER_FORWARD // rows)
    chunk_size = min(positive_int(chunk_size, "chunk_size"), len(counts))
    # Balance the chunks so that padding the last one wastes under one step per chunk.
    chunk_size = math.ceil(len(counts) / math.ceil(len(counts) / chunk_size))
    named = (str, _substrate.Substrate)
    custom = tuple(None if isinstance(s, named) else jnp.asarray(s, x.dtype) for _, s, _ in plans)
    plans = tuple((mode, s if isinstance(s, named) else None, neg) for mode, s, neg in plans)
    scores = _curves(
        apply_fn,
        params,
        x,
        attribution,
        target,
        key,
        custom,
        spec=CurveSpec(
            plans,
            tuple(counts),
            chunk_size,
            score,
            granularity,
            patch_size,
            tie_break,
            normalisation,
        ),
    )
    return scores, counts, num_features
