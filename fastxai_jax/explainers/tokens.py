"""Token attributions: the per-input methods over a text classifier's tokens.

The contract: an attribution is ``[B, T]`` over token positions and padding
(``attention_mask == 0``) receives exactly 0. A text target is a :class:`TextFns`:
``embed(params, input_ids) -> [B, T, D]`` word embeddings and
``apply_embeds(params, embeds, attention_mask) -> logits [B, K]``.

Gradient methods differentiate with respect to the word embeddings and reuse
the image implementations unchanged (:mod:`~fastxai_jax.explainers.gradients`,
:mod:`~fastxai_jax.explainers.mfaba`): the embeddings travel as a
``[B, T, 1, D]`` "image" and the attention mask rides in the params, so
every path point, noisy copy or MFABA step sees the sentence's own mask.
RISE (Petsiuk et al., 2018) over tokens replaces masked tokens by ``[MASK]``
(default) or ``[PAD]`` keeping the attention mask, or drops them from the
attention (``fill="drop"``); [CLS]/[SEP] and padding are never masked.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.explainers import _common, gradients, mfaba
from fastxai_jax.explainers._common import check_choice, validate_positive
from fastxai_jax.explainers._token_target import (  # noqa: F401 (re-exported)
    TextFns,
    _finish,
    _on_embeddings,
    _prepare,
    bert_text_fns,
    check_tokens,
    content_mask,
)

FILLS = ("mask", "pad", "drop")
IG_BASELINES = ("pad", "zero")


@_on_embeddings
def token_saliency(fns, params, input_ids, attention_mask, target=None, *, score="logit"):
    """Saliency (Simonyan et al., 2014) per token: ``‖∂ f_target / ∂e_t‖₂`` over the embedding axis.

    Args:
      fns: the text target (:class:`TextFns`).
      params: its parameters.
      input_ids: ``[B, T]`` int token ids.
      attention_mask: ``[B, T]`` 0/1.
      target: ``[B]`` int classes (default: the predicted class).
      score: ``"logit"``, ``"probability"`` or ``"log_probability"``.

    Returns:
      ``[B, T]`` non-negative relevance, 0 on padding.
    """
    apply4, packed, x4, target, mask = _prepare(fns, params, input_ids, attention_mask, target)
    grad = gradients.saliency(
        apply4, packed, x4, target, absolute=False, score=score, per_channel=True
    )
    return _finish(jnp.sqrt(jnp.sum(jnp.square(grad), axis=-1)), mask)


@_on_embeddings
def token_input_x_gradient(fns, params, input_ids, attention_mask, target=None, *, score="logit"):
    """Input×Gradient (Shrikumar et al., 2016) per token: ``Σ_d e_td ∂f/∂e_td`` (signed).

    Args and returns as :func:`token_saliency` (signed values).
    """
    apply4, packed, x4, target, mask = _prepare(fns, params, input_ids, attention_mask, target)
    return _finish(gradients.input_x_gradient(apply4, packed, x4, target, score=score), mask)


def ig_baseline_embeddings(fns, params, input_ids, attention_mask, baseline="pad"):
    """IG baseline ``[B, T, D]``: every token's embedding replaced by ``[PAD]``'s, or zeros."""
    check_choice("baseline", baseline, IG_BASELINES)
    embeds = fns.embed(params, jnp.asarray(input_ids, jnp.int32))
    if baseline == "zero":
        return jnp.zeros_like(embeds)
    pad = fns.embed(params, jnp.full((1, 1), fns.pad_id, jnp.int32))
    return jnp.broadcast_to(pad, embeds.shape)


@_on_embeddings
def token_integrated_gradients(
    fns, params, input_ids, attention_mask, target=None, *, baseline="pad", num_steps=50, **options
):
    """Integrated Gradients (Sundararajan et al., 2017) over the word embeddings, summed per token.

    Args:
      fns, params, input_ids, attention_mask, target: as :func:`token_saliency`.
      baseline: ``"pad"`` ([PAD]'s embedding at every position) or ``"zero"``.
      num_steps: path points.
      **options: passed to :func:`~fastxai_jax.explainers.gradients.integrated_gradients`
        (``method``, ``score``, ``batch_size``, ``loop``).

    Returns:
      ``[B, T]`` signed relevance summing to ``f(x) − f(baseline)`` (completeness).
    """
    check_choice("baseline", baseline, IG_BASELINES)
    apply4, packed, x4, target, mask = _prepare(fns, params, input_ids, attention_mask, target)
    base = ig_baseline_embeddings(fns, params, input_ids, attention_mask, baseline)[:, :, None]
    out = gradients.integrated_gradients(
        apply4, packed, x4, target, baseline=base, num_steps=num_steps, **options
    )
    return _finish(out, mask)


def _smoothgrad_scan(apply4, packed, x4, target, keys, sigma):
    length, dim = x4.shape[1], x4.shape[-1]

    def body(total, sample_key):
        # Noise of token t from fold_in(key, t): the same whatever the padded length.
        noise = jax.vmap(lambda t: jax.random.normal(jax.random.fold_in(sample_key, t), (dim,)))(
            jnp.arange(length)
        )
        noisy = x4 + sigma[:, None, None, None] * noise[None, :, None, :]
        return total + _common.score_grad(apply4, packed, noisy, target, "logit"), None

    return jax.lax.scan(body, jnp.zeros_like(x4), keys)[0] / keys.shape[0]


_smoothgrad_scan_jit = jax.jit(_smoothgrad_scan, static_argnames=("apply4",))


@_on_embeddings
def token_smoothgrad(
    fns, params, input_ids, attention_mask, target=None, *, key, num_samples=50, noise_level=0.15
):
    """SmoothGrad (Smilkov et al., 2017) per token: ``‖E_ε ∇f(e + ε)‖₂`` over the embedding axis.

    The noise ``ε ~ N(0, σ²)``, ``σ = noise_level · (max e − min e)`` over the
    sentence's real-token embeddings (the paper's 15%), is drawn per token
    position, so a sentence gets the same map alone or in a padded batch.

    Args:
      fns, params, input_ids, attention_mask, target: as :func:`token_saliency`.
      key: PRNG key for the noise.
      num_samples: noisy copies.
      noise_level: ``σ`` relative to the embedding range.

    Returns:
      ``[B, T]`` non-negative relevance, 0 on padding.
    """
    if key is None:
        raise ValueError("key is required for token_smoothgrad (stochastic)")
    validate_positive("num_samples", num_samples)
    apply4, packed, x4, target, mask = _prepare(fns, params, input_ids, attention_mask, target)
    real = mask.astype(bool)[:, :, None, None]
    spread = jnp.max(jnp.where(real, x4, -jnp.inf), axis=(1, 2, 3)) - jnp.min(
        jnp.where(real, x4, jnp.inf), axis=(1, 2, 3)
    )
    keys = jax.random.split(key, num_samples)
    grad = _smoothgrad_scan_jit(apply4, packed, x4, target, keys, float(noise_level) * spread)
    return _finish(jnp.sqrt(jnp.sum(jnp.square(grad), axis=-1)), mask)


@_on_embeddings
def token_mfaba(fns, params, input_ids, attention_mask, target=None, **options):
    """MFABA (Zhu et al., AAAI 2024) along the embedding path, summed per token.

    Args:
      fns, params, input_ids, attention_mask, target: as :func:`token_saliency`.
      **options: passed to :func:`~fastxai_jax.explainers.mfaba.mfaba`; ``data_range``
        defaults to unbounded (embeddings have no box).

    Returns:
      ``[B, T]`` signed relevance, 0 on padding.
    """
    apply4, packed, x4, target, mask = _prepare(fns, params, input_ids, attention_mask, target)
    options.setdefault("data_range", (-1e30, 1e30))
    return _finish(mfaba.mfaba(apply4, packed, x4, target, **options), mask)


def _rise_scan(fns, params, ids, mask, content, target, keys, p_keep, fill, chunk_size, valid):
    batch, length = ids.shape
    fill_id = fns.pad_id if fill == "pad" else fns.mask_id

    def body(total, inputs):
        chunk_keys, chunk_valid = inputs
        # Draw max_length bits per mask and slice: a token's bit does not depend on T.
        keep = jax.vmap(lambda k: jax.random.bernoulli(k, p_keep, (fns.max_length,)))(chunk_keys)
        keep = keep[:, None, :length] | ~content[None]  # [C, B, T]; specials/padding kept
        attend = jnp.broadcast_to(mask[None], keep.shape)
        attend = attend * keep if fill == "drop" else attend
        masked_ids = jnp.where(keep, ids[None], fill_id)
        flat = (-1, length)
        embeds = fns.embed(params, masked_ids.reshape(flat))
        logits = fns.apply_embeds(params, embeds, attend.reshape(flat).astype(jnp.int32))
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).reshape(
            chunk_keys.shape[0], batch, -1
        )
        scores = (
            jnp.take_along_axis(probs, target[None, :, None], axis=-1)[..., 0]
            * chunk_valid[:, None]
        )
        return total + jnp.einsum("cb,cbt->bt", scores, keep.astype(jnp.float32)), None

    init = jnp.zeros((batch, length), jnp.float32)
    return jax.lax.scan(body, init, (keys, valid))[0]


_rise_scan_jit = jax.jit(_rise_scan, static_argnames=("fns", "p_keep", "fill", "chunk_size"))


@_on_embeddings
def token_rise(
    fns,
    params,
    input_ids,
    attention_mask,
    target=None,
    *,
    key,
    num_masks=1000,
    p_keep=0.5,
    fill="mask",
    chunk_size=100,
):
    """RISE (Petsiuk et al., 2018) over tokens: ``Σ_i p(ŷ | x ⊙ M_i) M_i / (N p)``.

    Each mask keeps every content token independently with probability ``p``;
    removed tokens become ``[MASK]`` (``fill="mask"``) or ``[PAD]`` (``"pad"``)
    with the attention mask unchanged, or leave the attention (``"drop"``).
    [CLS]/[SEP] and padding are never removed and get 0.

    Args:
      fns, params, input_ids, attention_mask, target: as :func:`token_saliency`.
      key: PRNG key (mask ``i`` from ``split(key, N)[i]``; a token's bit does not
        depend on the padded length, so a sentence scores the same alone or batched).
      num_masks: ``N`` target forwards per sentence.
      p_keep: ``p``.
      fill: one of :data:`FILLS`.
      chunk_size: masks per batched target call.

    Returns:
      ``[B, T]`` relevance, 0 on padding and special tokens.
    """
    if key is None:
        raise ValueError("key is required for token_rise (stochastic)")
    validate_positive("num_masks", num_masks)
    validate_positive("chunk_size", chunk_size)
    check_choice("fill", fill, FILLS)
    if not 0.0 < float(p_keep) <= 1.0:
        raise ValueError(f"p_keep must lie in (0, 1]; got {p_keep!r}")
    _, packed, _, target, mask = _prepare(fns, params, input_ids, attention_mask, target)
    ids = jnp.asarray(input_ids, jnp.int32)
    content = content_mask(fns, ids, mask)
    num_chunks = math.ceil(num_masks / chunk_size)
    index = np.arange(num_chunks * chunk_size)
    keys = jax.random.split(key, num_masks)[np.minimum(index, num_masks - 1)]
    keys = keys.reshape((num_chunks, chunk_size) + keys.shape[1:])
    valid = jnp.asarray((index < num_masks).reshape(num_chunks, chunk_size), jnp.float32)
    total = _rise_scan_jit(
        fns, params, ids, mask, content, target, keys, float(p_keep), fill, chunk_size, valid
    )
    return jnp.where(content, total / (num_masks * float(p_keep)), 0.0)


def token_random(fns, params, input_ids, attention_mask, target=None, *, key):
    """A random token map: ``U(0, 1)`` on content tokens, 0 on [CLS]/[SEP]/padding.

    Token ``t``'s value comes from ``fold_in(key, t)``: the same alone or batched.
    """
    if key is None:
        raise ValueError("key is required for token_random (stochastic)")
    check_tokens(fns, input_ids, attention_mask)
    del params, target
    length = np.shape(input_ids)[1]
    values = jax.vmap(lambda t: jax.random.uniform(jax.random.fold_in(key, t)))(jnp.arange(length))
    content = content_mask(fns, input_ids, attention_mask)
    return jnp.where(content, values[None, :], 0.0)


def token_method_cost(name: str, **options: Any) -> tuple[int, int]:
    """``(forward, backward)`` target passes per sentence of a token method.

    Args:
      name: ``"saliency"``, ``"input_x_gradient"``, ``"integrated_gradients"``,
        ``"smoothgrad"``, ``"mfaba"``, ``"rise"``, ``"dax"``, ``"random"``, or
        ``"fex"`` / ``"fastshap"`` (one explainer forward, no target pass).
      **options: the method's size options (``num_steps``, ``num_samples``, ``num_masks``).
    """
    if name in ("saliency", "input_x_gradient"):
        return 1, 1
    if name == "integrated_gradients":
        steps = int(options.get("num_steps", 50))
        return steps, steps
    if name == "smoothgrad":
        samples = int(options.get("num_samples", 50))
        return samples, samples
    if name == "mfaba":  # at most num_steps steps, one forward+backward each, plus x_0
        steps = int(options.get("num_steps", 50)) + 1
        return steps, steps
    if name == "rise":
        return int(options.get("num_masks", 1000)), 0
    if name == "dax":  # explainers.dax_tokens: num_samples queries, no gradient
        return int(options.get("num_samples", 3000)), 0
    if name in ("random", "fex", "fastshap"):
        return 0, 0
    raise ValueError(f"name must be a token method; got {name!r}")
