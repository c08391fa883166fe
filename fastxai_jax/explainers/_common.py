"""Helpers shared by the gradient explainers: validation, scores, chunked sums.

Everything here is private to :mod:`fastxai_jax.explainers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.core import ApplyFn, Params, check_choice, check_images, check_target

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
    chunks, chunk_weights = pad_chunks(inputs, weights, batch_size)
    out_shape = jax.eval_shape(fn, jax.tree.map(lambda leaf: leaf[0, 0], chunks))

    def body(total, chunk):
        chunk_inputs, w = chunk
        return total + weighted_vmap_sum(fn, chunk_inputs, w), None

    init = jnp.zeros(out_shape.shape, out_shape.dtype)
    total, _ = jax.lax.scan(body, init, (chunks, chunk_weights))
    return total


def is_traced(*trees: Any) -> bool:
    """Whether any leaf is a tracer (the call sits inside ``jit``/``vmap``/``grad``)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(trees))


def resolve_loop(loop: str, *trees: Any, compiled: str = "scan") -> str:
    """``compiled`` or ``"host"`` for a step/chunk loop; ``"auto"`` = host on CPU outside a trace.

    XLA:CPU runs a large network's forward+backward inside a ``lax.scan`` /
    ``while_loop`` body markedly slower than the same step compiled on its own
    (1.4–1.6× for ResNet-50 at 224², jax-ml/jax#12868); a host loop over one
    compiled step avoids that. Under a trace only the compiled loop is possible.

    Args:
      loop: ``"auto"``, ``compiled`` or ``"host"``.
      trees: the call's array arguments (checked for tracers).
      compiled: the caller's name for its compiled loop (``"scan"``, ``"while"``).

    Raises:
      ValueError: unknown ``loop``, or ``"host"`` under a trace.
    """
    check_choice("loop", loop, ("auto", compiled, "host"))
    traced = is_traced(*trees)
    if loop == "auto":
        return "host" if jax.default_backend() == "cpu" and not traced else compiled
    if loop == "host" and traced:
        raise ValueError(f"loop='host' cannot run under jit/vmap (use loop='{compiled}' or 'auto')")
    return loop


def weighted_vmap_sum(fn: Callable[[Any], jax.Array], inputs: Any, weights: jax.Array):
    """``Σ_i weights[i] · fn(inputs[i])`` over one chunk, all calls ``vmap``ped."""
    outs = jax.vmap(fn)(inputs)
    w = weights.reshape((-1,) + (1,) * (outs.ndim - 1)).astype(outs.dtype)
    return jnp.sum(w * outs, axis=0)


def pad_chunks(inputs: Any, weights: jax.Array, batch_size: int | None) -> tuple[Any, jax.Array]:
    """Reshapes ``inputs`` (leading axis ``n``) and ``weights [n]`` into equal chunks.

    The last chunk is padded by repeating the last input with weight 0, so every
    chunk has the same shape (one compilation) and the padding adds nothing.

    Returns:
      ``(chunks, chunk_weights)`` with leading axes ``[num_chunks, size]``.
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
    chunk_weights = jnp.concatenate([jnp.asarray(weights), jnp.zeros((pad,), weights.dtype)])
    return chunks, chunk_weights.reshape(num_chunks, size)


def host_chunked_weighted_sum(
    chunk_sum: Callable[[Any, jax.Array], jax.Array],
    inputs: Any,
    weights: jax.Array,
    batch_size: int | None,
) -> jax.Array:
    """:func:`chunked_weighted_sum` driven from Python, one compiled call per chunk.

    Args:
      chunk_sum: a *jitted* ``chunk_sum(chunk_inputs, chunk_weights) -> Σ w·fn(input)``
        over one chunk (leading axis ``size``).
      inputs, weights, batch_size: as :func:`chunked_weighted_sum`.

    Returns:
      The weighted sum; chunks are added in the same order as the ``lax.scan`` form.
    """
    chunks, chunk_weights = pad_chunks(inputs, weights, batch_size)
    total = None
    for i in range(chunk_weights.shape[0]):
        part = chunk_sum(jax.tree.map(lambda leaf, i=i: leaf[i], chunks), chunk_weights[i])
        total = part if total is None else total + part
    return total
