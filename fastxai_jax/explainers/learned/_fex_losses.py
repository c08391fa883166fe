"""FEX's reward and policy-gradient losses (SPEC §2), rlax style.

Each function handles ONE episode (one image, one sampled patch mask) or one
image's class distributions; callers batch them with ``jax.vmap``. Shapes are
checked at trace time with ``chex``.

Reference: Pan, Moniz, Chawla, "FEX: fast explanations by policy gradient",
IJCAI 2025; PPO from Schulman et al. 2017; REINFORCE with a baseline from
Williams 1992.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from fastxai_jax.explainers._masks import bernoulli_entropy, bernoulli_log_prob


class EpisodeTerms(NamedTuple):
    """Per-episode loss terms (all scalars) returned beside the loss."""

    actor: jax.Array
    value: jax.Array
    entropy: jax.Array
    log_prob: jax.Array
    advantage: jax.Array
    ratio: jax.Array


def fex_reward(prob: jax.Array, mask: jax.Array, empty_prob: Any = 0.0) -> jax.Array:
    """FEX reward ``r = (p_f(ŷ | x ⊙ m) − p₀) · L / (Σm + 1)``.

    The authors' reward has ``p₀ = 0``. With ``p₀ = p_f(ŷ | x ⊙ 0)`` (the fully
    masked image, ``FexConfig.reward_baseline="empty"``) keeping no patch earns
    exactly 0, so a class that the target predicts on a blank image cannot be
    "explained" by dropping every patch.

    Args:
      prob: scalar target probability of ŷ on the masked image.
      mask: ``[L]`` kept patches in ``{0, 1}``.
      empty_prob: scalar ``p₀`` subtracted from ``prob``.

    Returns:
      Scalar reward; larger when the class survives with fewer kept patches.
    """
    chex.assert_rank([prob, mask], [0, 1])
    num_patches = mask.shape[0]
    return (prob - empty_prob) * num_patches / (jnp.sum(mask) + 1.0)


def policy_log_prob(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """``log π(m) = Σ_l log Bernoulli(m_l; σ(logit_l))`` for ``logits, mask: [L]``."""
    chex.assert_rank([logits, mask], 1)
    return jnp.sum(bernoulli_log_prob(logits, mask))


ENTROPY_REDUCTIONS = ("mean", "sum")


def policy_entropy(logits: jax.Array, reduction: str = "sum") -> jax.Array:
    """Entropy of the factorised Bernoulli policy over ``[L]`` patches (nats).

    ``reduction="sum"`` is the joint policy's entropy ``H(π)``; ``"mean"`` divides
    it by ``L``, the authors' ``dist.entropy().mean()`` (``maskgen/trainer.py``).
    """
    chex.assert_rank(logits, 1)
    if reduction not in ENTROPY_REDUCTIONS:
        raise ValueError(f"reduction must be one of {ENTROPY_REDUCTIONS}; got {reduction!r}")
    per_patch = bernoulli_entropy(logits)
    return jnp.sum(per_patch) if reduction == "sum" else jnp.mean(per_patch)


class LossWeights(NamedTuple):
    """Weights of one episode's loss terms, shared by :func:`ppo_loss` and
    :func:`reinforce_loss`.

    Attributes:
      actor: weight of the policy-gradient (surrogate) term.
      value: weight of the squared value error (0.5: ``0.5·MSE``).
      entropy: weight of the entropy bonus.
      entropy_reduction: ``"mean"`` over patches (the authors') or ``"sum"`` (the
        joint entropy), see :func:`policy_entropy`.
    """

    actor: float = 1.0
    value: float = 0.5
    entropy: float = 1e-4
    entropy_reduction: str = "mean"


def _advantage(reward: jax.Array, value: jax.Array, advantage: Any) -> jax.Array:
    # The authors' advantage is frozen at the rollout's values (``advantage``);
    # without one, the current critic is the baseline. No gradient either way.
    return jax.lax.stop_gradient(reward - value if advantage is None else advantage)


def _episode(actor, logits, log_prob, reward, value, advantage, ratio, weights: LossWeights):
    """The loss both estimators share: weighted actor term, value error and entropy."""
    value_term = jnp.square(value - reward)
    entropy = policy_entropy(logits, weights.entropy_reduction)
    loss = weights.actor * actor + weights.value * value_term - weights.entropy * entropy
    return loss, EpisodeTerms(actor, value_term, entropy, log_prob, advantage, ratio)


def ppo_loss(
    logits: jax.Array,
    mask: jax.Array,
    old_log_prob: jax.Array,
    reward: jax.Array,
    value: jax.Array,
    *,
    clip_eps: float = 0.2,
    weights: LossWeights = LossWeights(),
    advantage: jax.Array | None = None,
) -> tuple[jax.Array, EpisodeTerms]:
    """Clipped PPO loss for one episode (Schulman et al. 2017; FEX's objective).

    ``loss = w.value·(V − r)² + w.actor·(−min(ρA, clip(ρ, 1±ε)A)) −
    w.entropy·H(π)`` with ``ρ = exp(log π(m) − old_log_prob)`` and the
    advantage ``A = r − V`` (no gradient through ``A``), or the given
    ``advantage`` (the authors': ``r − V_old``, frozen for the whole rollout).
    ``w.value = 0.5`` makes the value term ``0.5·MSE``.

    Args:
      logits: ``[L]`` current policy logits (actor logit of class ŷ per patch).
      mask: ``[L]`` the sampled mask in ``{0, 1}``.
      old_log_prob: scalar ``log π_old(m)`` of the behaviour policy.
      reward: scalar reward of the episode.
      value: scalar critic value ``V(ŷ)``.
      clip_eps: PPO ratio clipping ε.
      weights: the terms' weights ``w`` (:class:`LossWeights`).
      advantage: optional scalar advantage (default ``r − V``).

    Returns:
      ``(loss, EpisodeTerms)``.
    """
    chex.assert_rank([logits, mask, old_log_prob, reward, value], [1, 1, 0, 0, 0])
    log_prob = policy_log_prob(logits, mask)
    advantage = _advantage(reward, value, advantage)
    ratio = jnp.exp(log_prob - old_log_prob)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    actor = -jnp.minimum(ratio * advantage, clipped * advantage)
    return _episode(actor, logits, log_prob, reward, value, advantage, ratio, weights)


def reinforce_loss(
    logits: jax.Array,
    mask: jax.Array,
    reward: jax.Array,
    value: jax.Array,
    *,
    weights: LossWeights = LossWeights(),
    advantage: jax.Array | None = None,
) -> tuple[jax.Array, EpisodeTerms]:
    """REINFORCE with the critic as baseline (Williams 1992), one episode.

    ``loss = −w.actor·(r − V)·log π(m) + w.value·(V − r)² − w.entropy·H(π)``;
    ``r − V`` carries no gradient, so the actor gradient is the unbiased
    score-function estimate of ``−∇ E_π[r]``. Its gradient equals
    :func:`ppo_loss`'s at ratio 1 (the first PPO minibatch of a rollout).

    Args and returns as :func:`ppo_loss`, without ``old_log_prob``/``clip_eps``
    (the returned ratio is 1).
    """
    chex.assert_rank([logits, mask, reward, value], [1, 1, 0, 0])
    log_prob = policy_log_prob(logits, mask)
    advantage = _advantage(reward, value, advantage)
    actor = -advantage * log_prob
    ones = jnp.ones_like(log_prob)
    return _episode(actor, logits, log_prob, reward, value, advantage, ones, weights)


def token_class_distribution(actor_logits: jax.Array) -> jax.Array:
    """FEX's class distribution ``log μ = log_softmax(mean_tokens(log_softmax(actor)))``.

    Args:
      actor_logits: ``[L, C]`` per-patch, per-class actor logits.

    Returns:
      ``[C]`` log-probabilities ``log μ``.
    """
    chex.assert_rank(actor_logits, 2)
    return jax.nn.log_softmax(jnp.mean(jax.nn.log_softmax(actor_logits, axis=-1), axis=0))


def kl_to_target(target_probs: jax.Array, actor_logits: jax.Array) -> jax.Array:
    """``KL(p_f(·|x) ‖ μ)`` with μ from :func:`token_class_distribution`.

    Args:
      target_probs: ``[C]`` the target's softmax on the clean image (constant).
      actor_logits: ``[L, C]``.

    Returns:
      Scalar KL divergence in nats (``0·log 0`` taken as 0).
    """
    chex.assert_rank([target_probs, actor_logits], [1, 2])
    log_mu = token_class_distribution(actor_logits)
    p = jax.lax.stop_gradient(target_probs)
    log_p = jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
    return jnp.sum(p * (log_p - log_mu))
