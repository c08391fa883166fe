"""FEX over tokens: masked inputs, the per-mask reward and the leave-one-out advantage.

Split out of :mod:`~fastxai_jax.explainers.learned.fex_text` (which re-exports
:func:`masked_inputs` and :func:`loo_advantage`). The paper's reward (Pan,
Moniz, Chawla; IJCAI 2025) is the sufficiency term ``p_f(ŷ | x ⊙ m)`` scaled by
``n / (Σm + 1)``; ``reward="deletion"`` is this library's option, not the
paper's: it subtracts ``p_f(ŷ | x ⊙ (1 − m))``, the target's probability with
the KEPT content tokens removed, so that a token is credited both for being
sufficient and for being one whose removal hurts (the tokens the deletion
metric removes first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

REWARDS = ("sufficiency", "deletion")


def masked_inputs(fns: Any, ids, mask, keep, fill: str):
    """``(ids, attention)`` with the tokens where ``keep == 0`` removed by ``fill``."""
    keep = keep.astype(bool)
    fill_id = fns.pad_id if fill == "pad" else fns.mask_id
    attend = mask * keep if fill == "drop" else jnp.broadcast_to(mask, keep.shape)
    return jnp.where(keep, ids, fill_id), attend.astype(jnp.int32)


def loo_advantage(reward: jax.Array) -> jax.Array:
    """``A[b, k] = r[b, k] − mean_{j ≠ k} r[b, j]`` over a sentence's ``K ≥ 2`` masks
    (the leave-one-out baseline of Kool et al., 2019), ``[B, K]``."""
    k = reward.shape[1]
    return (reward * k - jnp.sum(reward, axis=1, keepdims=True)) / (k - 1)


def masked_probs(
    target_probs: Callable[..., jax.Array], fns: Any, ids, mask, keep, fill: str
) -> jax.Array:
    """``p_f(· | ids with keep == 0 removed)``, ``[B, K, C]`` for ``keep [B, K, T]``
    (one target call over the ``B·K`` masked sentences; FEX's rewards and FastSHAP's
    coalition values)."""
    batch_size, k, length = keep.shape
    masked_ids, attend = masked_inputs(fns, ids[:, None], mask[:, None], keep, fill)
    flat = (batch_size * k, length)
    probs = target_probs(masked_ids.reshape(flat), attend.reshape(flat))
    return probs.reshape(batch_size, k, -1)


def _class_prob(
    target_probs: Callable[..., jax.Array], fns: Any, ids, mask, keep, classes, fill: str
):
    """``p_f(ŷ | ids with keep == 0 removed)``, ``[B, K]`` for ``keep [B, K, T]``."""
    probs = masked_probs(target_probs, fns, ids, mask, keep, fill)
    return jnp.take_along_axis(probs, classes[:, None, None], -1)[..., 0]


def mask_rewards(
    target_probs: Callable[..., jax.Array],
    fns: Any,
    ids: jax.Array,
    mask: jax.Array,
    content: jax.Array,
    keep: jax.Array,
    classes: jax.Array,
    config: Any,
) -> tuple[jax.Array, jax.Array]:
    """Rewards of ``K`` masks per sentence: ``(reward [B, K], p_f(ŷ | x ⊙ m) [B, K])``.

    ``reward = (p_f(ŷ | x ⊙ m) − b − d)·s`` with ``b = p_f(ŷ | no content token)``
    when ``config.reward_baseline == "empty"`` (else 0), ``d = p_f(ŷ | x ⊙ (1 − m))``
    when ``config.reward == "deletion"`` (else 0) and ``s = n / (Σm + 1)`` when
    ``config.reward_scale == "size"`` (else 1), over the sentence's ``n`` content
    tokens. [CLS]/[SEP]/padding are never removed by ``m`` nor by ``1 − m``.

    Args:
      target_probs: ``(ids [N, T], attention [N, T]) -> softmax probs [N, C]``.
      fns: the text target's :class:`~fastxai_jax.explainers.tokens.TextFns` (fill ids).
      ids, mask, content: ``[B, T]`` ids, attention mask and content-token mask.
      keep: ``[B, K, T]`` 0/1 masks (1 on every non-content token).
      classes: ``[B]`` explained classes ``ŷ``.
      config: a ``TextFexConfig`` (``fill``, ``reward``, ``reward_baseline``, ``reward_scale``).

    Returns:
      The rewards (no gradient) and the kept-input probabilities. Target queries:
      ``B·K``, plus ``B·K`` for ``reward="deletion"``, plus ``B`` for the empty baseline.
    """
    kept_prob = _class_prob(target_probs, fns, ids, mask, keep, classes, config.fill)
    gain = kept_prob
    if config.reward_baseline == "empty":
        none_ids, none_attend = masked_inputs(fns, ids, mask, ~content, config.fill)
        empty = jnp.take_along_axis(target_probs(none_ids, none_attend), classes[:, None], -1)
        gain = gain - empty
    if config.reward == "deletion":
        removed = (1.0 - keep) * content[:, None] + (1.0 - content[:, None])
        gain = gain - _class_prob(target_probs, fns, ids, mask, removed, classes, config.fill)
    if config.reward_scale == "size":
        count = jnp.sum(content, axis=1).astype(jnp.float32)[:, None]
        gain = gain * count / (jnp.sum(keep * content[:, None], axis=-1) + 1.0)
    return jax.lax.stop_gradient(gain), kept_prob
