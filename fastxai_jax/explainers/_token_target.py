"""A text target's contract and the plumbing every token method shares.

A text target is a :class:`TextFns` of pure functions; a token batch is
``input_ids [B, T]`` with ``attention_mask [B, T]`` (1 on real tokens, padding
at the end). :func:`_prepare` lifts the embeddings to a ``[B, T, 1, D]``
"image" so the image methods run on them unchanged, and :func:`_finish` puts
exact zeros on padding. Public names are re-exported by
:mod:`~fastxai_jax.explainers.tokens` (use them from there).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.core import check_target, non_image_inputs


class TextFns(NamedTuple):
    """A text target, as pure functions (hashable: usable as a static jit argument).

    Attributes:
      embed: ``embed(params, input_ids [B, T]) -> [B, T, D]`` word embeddings.
      apply_embeds: ``apply_embeds(params, embeds, attention_mask) -> logits [B, K]``.
      vocab_size: ids must lie in ``[0, vocab_size)``.
      max_length: the longest ``T`` (position embeddings).
      pad_id, mask_id: ``[PAD]`` and ``[MASK]`` ids.
      special_ids: ids never masked by RISE nor scored by the token metrics
        ([CLS], [SEP]).
    """

    embed: Callable[..., jax.Array]
    apply_embeds: Callable[..., jax.Array]
    vocab_size: int
    max_length: int
    pad_id: int = 0
    mask_id: int = 103
    special_ids: tuple[int, ...] = (101, 102)


@functools.lru_cache(maxsize=32)
def bert_text_fns(module: Any, mask_id: int = 103, special_ids: tuple = (101, 102)) -> TextFns:
    """:class:`TextFns` of a :class:`~fastxai_jax.models.bert.BertClassifier`-like module.

    ``module.apply(variables, input_ids=None, attention_mask=m, inputs_embeds=e)``
    must return ``(logits, aux)``; ``variables["params"]["word_embeddings"]``
    holds the embedding table. Cached per module, so the functions are stable
    static arguments.
    """

    def embed(params, input_ids):
        return params["params"]["word_embeddings"]["embedding"][input_ids]

    def apply_embeds(params, embeds, attention_mask):
        return module.apply(params, attention_mask=attention_mask, inputs_embeds=embeds)[0]

    return TextFns(
        embed,
        apply_embeds,
        int(module.vocab_size),
        int(module.max_position_embeddings),
        int(module.pad_token_id),
        int(mask_id),
        tuple(int(i) for i in special_ids),
    )


def check_tokens(fns: TextFns, input_ids: Any, attention_mask: Any) -> None:
    """Validates a token batch at the boundary.

    Raises:
      ValueError: naming ``input_ids`` (not int ``[B, T]``, ids outside the
        vocabulary, ``T`` past the position embeddings) or ``attention_mask``
        (missing, shape mismatch, values not 0/1, a row without tokens, or
        holes: real tokens after padding).
    """
    shape = np.shape(input_ids)
    if len(shape) != 2 or not jnp.issubdtype(jnp.result_type(input_ids), jnp.integer):
        raise ValueError(
            f"input_ids must be an int array [B, T]; got {jnp.result_type(input_ids)} {shape}"
        )
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"input_ids is empty (shape {shape})")
    if shape[1] > fns.max_length:
        raise ValueError(
            f"input_ids has T={shape[1]} tokens, more than the {fns.max_length} position embeddings"
        )
    if attention_mask is None:
        raise ValueError("attention_mask is required ([B, T], 1 on real tokens)")
    if np.shape(attention_mask) != shape:
        raise ValueError(
            f"attention_mask must have input_ids' shape {shape}; got {np.shape(attention_mask)}"
        )
    if isinstance(input_ids, jax.core.Tracer) or isinstance(attention_mask, jax.core.Tracer):
        return
    ids, mask = np.asarray(input_ids), np.asarray(attention_mask)
    if ids.min() < 0 or ids.max() >= fns.vocab_size:
        raise ValueError(
            f"input_ids holds ids outside the vocabulary [0, {fns.vocab_size}): "
            f"min {ids.min()}, max {ids.max()}"
        )
    if not np.isin(mask, (0, 1)).all():
        raise ValueError("attention_mask must hold only 0 and 1")
    if not mask.any(axis=1).all():
        raise ValueError("attention_mask has a row without any real token")


def content_mask(fns: TextFns, input_ids: Any, attention_mask: Any) -> jax.Array:
    """``[B, T]`` bool: real tokens that are not [CLS]/[SEP] (what RISE masks and metrics rank)."""
    special = jnp.isin(jnp.asarray(input_ids), jnp.asarray(fns.special_ids, jnp.int32))
    return jnp.asarray(attention_mask).astype(bool) & ~special


@functools.lru_cache(maxsize=32)
def _lifted(apply_embeds: Callable) -> Callable:
    """``apply((params, mask), x [B, T, 1, D]) -> logits``: embeddings as a 1-pixel-wide image."""

    def apply4(packed, x4):
        params, attention_mask = packed
        return apply_embeds(params, x4[:, :, 0, :], attention_mask)

    return apply4


def _on_embeddings(fn):
    """Runs a token method with the image contract off: x4 holds embeddings."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with non_image_inputs():
            return fn(*args, **kwargs)

    return wrapped


def _prepare(fns, params, input_ids, attention_mask, target):
    check_tokens(fns, input_ids, attention_mask)
    ids = jnp.asarray(input_ids, jnp.int32)
    mask = jnp.asarray(attention_mask, jnp.int32)
    embeds = fns.embed(params, ids)
    if target is None:
        target = jnp.argmax(fns.apply_embeds(params, embeds, mask), axis=-1)
    else:
        target = np.asarray(target) if isinstance(target, list | tuple) else target
        logits = jax.eval_shape(fns.apply_embeds, params, embeds, mask)
        check_target(target, ids.shape[0], logits.shape[-1])
    target = jnp.asarray(target, jnp.int32)
    x4 = embeds[:, :, None, :]
    return _lifted(fns.apply_embeds), (params, mask), x4, target, mask


def _finish(per_token: jax.Array, mask: jax.Array) -> jax.Array:
    """``[B, T, 1]`` or ``[B, T]`` → ``[B, T]`` float32 with padding exactly 0."""
    per_token = per_token.reshape(mask.shape).astype(jnp.float32)
    return jnp.where(mask.astype(bool), per_token, 0.0)
