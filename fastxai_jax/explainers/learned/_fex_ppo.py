"""FEX's rollout and minibatch loss: the authors' PPO (``maskgen/trainer.py``).

Per data batch ``x [B, H, W, 3]`` (SPEC §2; Pan, Moniz, Chawla, IJCAI 2025):

1. rollout, no gradient: ŷ = argmax of the target on the clean image; ``K``
   actions per image from the policy (ε-greedy optional); reward
   ``p_f(ŷ | x ⊙ m)·L / (Σm + 1)``; ``old_log_prob`` under the policy (also for
   ε-randomised masks); returns = rewards (no discount); advantages
   ``r − V_old(ŷ)``, not normalised, frozen for the rollout. Rows are
   step-major: row ``r = k·B + b`` (the authors' ``torch.cat`` of ``K`` lists).
2. ``loss="ppo"``: ``ppo_epochs × (B·K // ppo_minibatch_size)`` optimizer steps,
   each on ``ppo_minibatch_size`` rows drawn with replacement (``ppo_iter``);
   ``loss="reinforce"``: one step on all ``B·K`` rows (= PPO's gradient at ratio 1).

The per-minibatch loss is ``0.5·MSE(r, V(ŷ)) + l_actor·(−min(ρA, clip(ρ)A)) −
l_entropy·H + l_kl·KL(p_f(·|x) ‖ μ)``, every term a mean over the minibatch rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fastxai_jax.explainers._masks import apply_mask, fill_value_01, upsample_nearest
from fastxai_jax.explainers.learned import _fex_losses as losses
from fastxai_jax.explainers.learned._update import RolloutRows

POLICIES = ("sigmoid", "softmax")
EPSILON_SCOPES = ("image", "patch")


class Rollout(NamedTuple):
    """One data batch's rollout (no gradient); ``N = K·B`` rows, step-major.

    Attributes:
      images: ``[B, H, W, 3]`` the states (row ``r`` is image ``r % B``).
      classes: ``[B]`` ŷ, the target's prediction on the clean image.
      target_logits: ``[B, C]`` the target's logits on the clean image.
      actions: ``[N, L]`` masks in ``{0, 1}``.
      old_log_probs: ``[N]`` ``log π_old(m)`` summed over patches.
      values: ``[N]`` the critic's ``V_old(ŷ)``.
      returns: ``[N]`` rewards (the authors' returns: no discount).
      advantages: ``[N]`` ``returns − values``.
    """

    images: jax.Array
    classes: jax.Array
    target_logits: jax.Array
    actions: jax.Array
    old_log_probs: jax.Array
    values: jax.Array
    returns: jax.Array
    advantages: jax.Array


def policy_logits(actor: jax.Array, classes: jax.Array, policy: str = "sigmoid") -> jax.Array:
    """Bernoulli keep logits ``[B, L]`` of each image's class.

    Args:
      actor: ``[B, L, C]`` per-patch, per-class actor logits.
      classes: ``[B]`` the class explained in each image.
      policy: ``"sigmoid"`` (the paper and the authors' code): ``actor[ŷ]``, keep
        probability ``σ(actor[ŷ])``. ``"softmax"`` is NOT the authors' (nor the
        paper's): an option of this library, ``actor[ŷ] − logsumexp_{c≠ŷ}
        actor[c]``, the logit of ``softmax_c(actor)[ŷ]`` (finite at any scale).
    """
    own = jnp.take_along_axis(actor, classes[:, None, None], axis=-1)[..., 0]
    if policy == "sigmoid":
        return own
    if policy != "softmax":
        raise ValueError(f"policy must be one of {POLICIES}; got {policy!r}")
    is_own = jax.nn.one_hot(classes, actor.shape[-1], dtype=bool)[:, None, :]
    others = jax.nn.logsumexp(jnp.where(is_own, -jnp.inf, actor), axis=-1)
    return own - others


def epsilon_greedy(
    sampled: jax.Array, random_actions: jax.Array, coins: jax.Array, epsilon: float
) -> jax.Array:
    """``where(coins < ε, random_actions, sampled)`` (``get_epsilon_greedy_action``).

    Args:
      sampled: ``[..., B, L]`` actions drawn from the policy.
      random_actions: ``[..., B, L]`` fair coin flips.
      coins: ``[..., B]`` one uniform per image (the authors': the whole mask is
        randomised) or ``[..., B, L]`` one per patch.
      epsilon: exploration probability.
    """
    if coins.ndim == sampled.ndim - 1:
        coins = coins[..., None]
    return jnp.where(coins < epsilon, random_actions, sampled)


def sample_actions(
    key: jax.Array, logits: jax.Array, num_masks: int, epsilon: float, scope: str = "image"
) -> jax.Array:
    """``[K, B, L]`` actions: Bernoulli(σ(logits)) samples, ε-greedy if ``ε > 0``.

    ``scope="image"`` (the authors') randomises a whole mask with probability ε;
    ``"patch"`` each patch independently.
    """
    coin_key, random_key, sample_key = jax.random.split(key, 3)
    shape = (num_masks,) + logits.shape
    probs = jnp.broadcast_to(jax.nn.sigmoid(logits), shape)
    sampled = jax.random.bernoulli(sample_key, probs).astype(logits.dtype)
    if epsilon <= 0:
        return sampled
    random_actions = jax.random.bernoulli(random_key, 0.5, shape).astype(logits.dtype)
    coins = jax.random.uniform(coin_key, shape if scope == "patch" else shape[:-1])
    return epsilon_greedy(sampled, random_actions, coins, epsilon)


def minibatch_rows(key: jax.Array, num_rows: int, minibatch_size: int, epochs: int) -> jax.Array:
    """``[epochs·(num_rows // minibatch_size), minibatch_size]`` row indices drawn
    uniformly WITH replacement, fresh per step (the authors' ``ppo_iter``)."""
    steps = epochs * (num_rows // minibatch_size)
    return jax.random.randint(key, (steps, minibatch_size), 0, num_rows)


def run_rollout(
    config: Any,
    forward_fn: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]],
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    target_params: Any,
    params: Any,
    x: jax.Array,
    actions_fn: Callable[[jax.Array], jax.Array],
) -> tuple[Rollout, dict[str, jax.Array]]:
    """The rollout of ``x [B, H, W, 3]`` (``B + B·K`` target queries, one more
    for ``reward_baseline="empty"``).

    Args:
      config: the ``FexConfig``.
      forward_fn: ``forward_fn(params, x) -> (actor [B, L, C], values [B, C])``.
      apply_fn, target_params: the target.
      params: the explainer's params (no gradient flows into them here).
      x: the data batch.
      actions_fn: ``actions_fn(policy_logits [B, L]) -> actions [K, B, L]``, e.g.
        :func:`sample_actions` with a key, or given actions (parity tests).
    """
    size = x.shape[1:3]
    gh, gw = config.grid
    fill01 = fill_value_01(config.fill, config.target_family)
    target_logits = apply_fn(target_params, x).astype(jnp.float32)
    classes = jnp.argmax(target_logits, axis=-1)
    actor, values = forward_fn(jax.lax.stop_gradient(params), x)
    logits = jax.lax.stop_gradient(policy_logits(actor, classes, config.policy))  # [B, L]
    actions = jax.lax.stop_gradient(actions_fn(logits))
    num_masks, batch = actions.shape[:2]
    pixels = upsample_nearest(actions.reshape((num_masks * batch, gh, gw)), size)
    masked = apply_mask(
        jnp.broadcast_to(x[None], (num_masks,) + x.shape).reshape((-1,) + x.shape[1:]),
        pixels,
        fill01,
    )
    scored = apply_fn(target_params, masked).astype(jnp.float32)  # ONE batched call
    probs = jax.nn.softmax(scored, axis=-1).reshape((num_masks, batch, -1))
    kept_prob = jnp.take_along_axis(probs, classes[None, :, None], axis=-1)[..., 0]  # [K, B]
    empty_prob = jnp.zeros_like(kept_prob)
    if config.reward_baseline == "empty":
        # The fill is constant, so every fully masked image is the same: one query.
        blank = apply_mask(x[:1], jnp.zeros((1,) + size, x.dtype), fill01)
        blank_probs = jax.nn.softmax(apply_fn(target_params, blank).astype(jnp.float32), -1)
        empty_prob = jnp.broadcast_to(blank_probs[0][classes][None], kept_prob.shape)
    reward = jax.vmap(jax.vmap(losses.fex_reward))(kept_prob, actions, empty_prob)
    old_log_probs = jax.vmap(jax.vmap(losses.policy_log_prob), (None, 0))(logits, actions)
    value = jnp.take_along_axis(values, classes[:, None], axis=-1)[:, 0]
    value = jnp.broadcast_to(value[None], reward.shape)
    flat = lambda a: a.reshape((num_masks * batch,) + a.shape[2:])
    rollout = Rollout(
        images=x,
        classes=classes,
        target_logits=target_logits,
        actions=flat(actions),
        old_log_probs=flat(old_log_probs),
        values=flat(value),
        returns=flat(reward),
        advantages=flat(reward - value),
    )
    metrics = {
        "reward": jnp.mean(reward),
        "target_prob_masked": jnp.mean(kept_prob),
        "keep_fraction": jnp.mean(actions),
    }
    return jax.tree.map(jax.lax.stop_gradient, rollout), metrics


def minibatch_loss(
    config: Any,
    forward_fn: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]],
    params: Any,
    rollout: Rollout,
    rows: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """FEX's loss on the rollout rows ``rows [m]`` (``compute_losses`` + their sum)."""
    batch = rollout.images.shape[0]
    image = rows % batch
    classes = rollout.classes[image]
    if rows.shape[0] >= batch:
        # As many rows as images or more: one forward per image, gathered per row
        # (same loss and gradient as a forward per row, up to float order).
        actor, values = jax.tree.map(lambda a: a[image], forward_fn(params, rollout.images))
    else:
        actor, values = forward_fn(params, rollout.images[image])
    logits = policy_logits(actor, classes, config.policy)  # [m, L]
    value = jnp.take_along_axis(values, classes[:, None], axis=-1)[:, 0]
    weights = losses.LossWeights(
        config.actor_coef, config.value_coef, config.entropy_coef, config.entropy_reduction
    )
    actions, returns = rollout.actions[rows], rollout.returns[rows]
    advantages = rollout.advantages[rows]
    if config.loss == "ppo":
        episode = lambda z, m, o, r, v, a: losses.ppo_loss(
            z, m, o, r, v, clip_eps=config.clip_eps, weights=weights, advantage=a
        )
        old = rollout.old_log_probs[rows]
        loss_rows, terms = jax.vmap(episode)(logits, actions, old, returns, value, advantages)
    else:
        episode = lambda z, m, r, v, a: losses.reinforce_loss(
            z, m, r, v, weights=weights, advantage=a
        )
        loss_rows, terms = jax.vmap(episode)(logits, actions, returns, value, advantages)
    target_probs = jax.nn.softmax(rollout.target_logits[image], axis=-1)
    kl = jax.vmap(losses.kl_to_target)(target_probs, actor)  # [m]
    loss = jnp.mean(loss_rows) + config.kl_coef * jnp.mean(kl)
    clipped = jnp.abs(terms.ratio - 1.0) > config.clip_eps
    metrics = {
        "value_loss": jnp.mean(terms.value),
        "actor_loss": jnp.mean(terms.actor),
        "entropy": jnp.mean(terms.entropy),
        "kl": jnp.mean(kl),
        "ratio": jnp.mean(terms.ratio),
        "clip_fraction": jnp.mean(clipped.astype(jnp.float32)),
    }
    return loss, metrics


def check_minibatch(config: Any, batch_size: int) -> None:
    """Raises ``ValueError`` if ``ppo_minibatch_size`` exceeds the rollout's
    ``B·K`` rows (the authors' code then makes no step at all)."""
    rows = batch_size * config.num_masks
    if config.loss == "ppo" and config.ppo_minibatch_size > rows:
        raise ValueError(
            f"ppo_minibatch_size {config.ppo_minibatch_size} exceeds the rollout's "
            f"B·K = {batch_size}·{config.num_masks} = {rows} rows (no PPO step would be made)"
        )


def make_loss(
    config: Any,
    forward_fn: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]],
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    target_params: Any,
    check_batch: Callable[[jax.Array], None],
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
    """FEX's ``loss_fn(params, batch, key)`` with its ``rollout`` attribute.

    ``batch`` is either :class:`RolloutRows` (one minibatch step of
    ``make_rollout_update``) or a data batch (images or ``{"images"}``): then the
    loss of a fresh rollout on all its rows, one step (PPO at ratio 1, i.e. the
    REINFORCE gradient); training uses ``loss_fn.rollout`` (``update_for``).
    """

    def images(batch: Any) -> jax.Array:
        x = batch["images"] if isinstance(batch, dict) else batch
        check_batch(x)
        return x

    def collect(params: Any, x: jax.Array, key: jax.Array):
        sample = lambda logits: sample_actions(
            key, logits, config.num_masks, config.epsilon, config.epsilon_scope
        )
        return run_rollout(config, forward_fn, apply_fn, target_params, params, x, sample)

    def rollout(params: Any, batch: Any, key: jax.Array):
        x = images(batch)
        check_minibatch(config, x.shape[0])
        sample_key, rows_key = jax.random.split(key)
        data, metrics = collect(params, x, sample_key)
        num_rows = data.actions.shape[0]
        if config.loss == "ppo":
            rows = minibatch_rows(rows_key, num_rows, config.ppo_minibatch_size, config.ppo_epochs)
        else:
            rows = jnp.arange(num_rows)[None]
        return data, rows, metrics

    def loss_fn(params: Any, batch: Any, key: jax.Array):
        if isinstance(batch, RolloutRows):
            return minibatch_loss(config, forward_fn, params, batch.rollout, batch.rows)
        data, metrics = collect(params, images(batch), key)
        rows = jnp.arange(data.actions.shape[0])
        loss, terms = minibatch_loss(config, forward_fn, params, data, rows)
        return loss, {**metrics, **terms}

    loss_fn.rollout = rollout
    return loss_fn
