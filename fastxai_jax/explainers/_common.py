"""Helpers shared by the gradient explainers: validation, scores, chunked sums.

Everything here is private to :mod:`fastxai_jax.explainers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.core import ApplyFn, Params, check_images, check_target

SCORES = ("logit", "probability", "log_probability")


def validate(
    apply_fn: ApplyFn,
    params: Params,
    x: Any,
    target: Any,
    **positive_ints: int,
) -> int:
    """Checks ``x: [B, H, W, C]``, ``target: [B]`` and positive integer options.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits [B, K]``.
      params: target parameters.
      x: batch of images (NaN/Inf rejected when concrete).
      target: ``[B]`` integer classes in ``[0, K)``.
      **positive_ints: options that must be Python ints ``>= 1`` (named in errors).

    Returns:
      The number of classes ``K``.

    Raises:
      ValueError: naming the offending argument.
    """
    for name, value in positive_ints.items():
        validate_positive(name, value)
    check_images(x, "x")
    logits_shape = jax.eval_shape(apply_fn, params, x).shape
    if len(logits_shape) != 2 or logits_shape[0] != np.shape(x)[0]:
        raise ValueError(
            f"apply_fn must return logits of shape ({np.shape(x)[0]}, num_classes); "
            f"got {logits_shape}"
        )
    if isinstance(target, list | tuple):
        target = np.asarray(target)
    check_target(target, np.shape(x)[0], logits_shape[-1])
    return int(logits_shape[-1])


def validate_positive(name: str, value: Any) -> None:
    """Raises ``ValueError`` naming ``name`` unless ``value`` is a Python int ``>= 1``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raises ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")


def class_score(logits: jax.Array, target: jax.Array, score: str = "logit") -> jax.Array:
    """Per-sample scalar score of the target class.

    Args:
      logits: ``[B, K]``.
      target: ``[B]`` int.
      score: ``"logit"`` (raw), ``"probability"`` (softmax) or ``"log_probability"``.

    Returns:
      ``[B]`` scores.
    """
    if score == "probability":
        values = jax.nn.softmax(logits, axis=-1)
    elif score == "log_probability":
        values = jax.nn.log_softmax(logits, axis=-1)
    else:
        values = logits
    return jnp.take_along_axis(values, target[:, None], axis=-1)[:, 0]


def score_grad(
    apply_fn: ApplyFn, params: Params, x: jax.Array, target: jax.Array, score: str = "logit"
) -> jax.Array:
    """``∇_x score(f(x))[target]`` per sample, ``[B, H, W, C]`` (one forward+backward)."""

    def total(xs):
        return jnp.sum(class_score(apply_fn(params, xs), target, score))

    return jax.grad(total)(x)


def score_value_and_grad(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    target: jax.Array,
    score: str = "logit",
    double_softmax: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """One forward+backward returning ``(logits [B, K], grad [B, H, W, C])``.

    ``double_softmax`` applies softmax to the logits before ``score`` (the MFABA
    authors' models end in softmax and they apply softmax again).
    """

    def total(xs):
        logits = apply_fn(params, xs)
        scored = jax.nn.softmax(logits, axis=-1) if double_softmax else logits
        return jnp.sum(class_score(scored, target, score)), logits

    (_, logits), grad = jax.value_and_grad(total, has_aux=True)(x)
    return logits, grad


def reduce_channels(attribution: jax.Array, per_channel: bool) -> jax.Array:
    """``[B, H, W, C]`` → ``[B, H, W]`` (channel sum) unless ``per_channel``."""
    return attribution if per_channel else jnp.sum(attribution, axis=-1)


def per_sample_norm(v: jax.Array) -> jax.Array:
    """L2 norm over all non-batch axes, shaped ``[B, 1, 1, 1]`` for broadcasting."""
    norms = jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim))))
    return norms.reshape((-1,) + (1,) * (v.ndim - 1))


def chunked_weighted_sum(
    fn: Callable[[Any], jax.Array],
    inputs: Any,
    weights: jax.Array,
    batch_size: int | None,
) -> jax.Array:
    """``Σ_i weights[i] · fn(inputs[i])`` with at most ``batch_size`` calls vmapped at once.

    A ``lax.scan`` over chunks (padded with zero weights) so that memory holds one
    chunk of ``fn`` outputs, never all of them.

    Args:
      fn: maps one slice of ``inputs`` (a pytree indexed along axis 0) to an array.
      inputs: pytree with leading axis ``n``.
      weights: ``[n]`` weights.
      batch_size: chunk size (``None`` = all at once).

    Returns:
      The weighted sum, shaped like ``fn``'s output.
    """
    n = int(weights.shape[0])
    size = n if batch_size is None else max(1, min(int(batch_size), n))
    num_chunks = -(-n // size)
    pad = num_chunks * size - n

    def pad_leaf(leaf):
        leaf = jnp.asarray(leaf)
        if pad:
            leaf = jnp.concatenate([leaf, jnp.repeat(leaf[-1:], pad, axis=0)], axis=0)
        return leaf.reshape((num_chunks, size) + leaf.shape[1:])

    chunks = jax.tree.map(pad_leaf, inputs)
    chunk_weights = jnp.concatenate([weights, jnp.zeros((pad,), weights.dtype)]).reshape(
        num_chunks, size
    )
    out_shape = jax.eval_shape(fn, jax.tree.map(lambda leaf: leaf[0, 0], chunks))

    def body(total, chunk):
        chunk_inputs, w = chunk
        outs = jax.vmap(fn)(chunk_inputs)
        w = w.reshape((size,) + (1,) * (outs.ndim - 1)).astype(outs.dtype)
        return total + jnp.sum(w * outs, axis=0), None

    init = jnp.zeros(out_shape.shape, out_shape.dtype)
    total, _ = jax.lax.scan(body, init, (chunks, chunk_weights))
    return total
