"""FastSHAP over tokens (Jethani et al., ICLR 2022; issue 21).

The players are a sentence's content tokens (real tokens other than
[CLS]/[SEP]); the value of a coalition ``S`` is the target's class
probabilities with the content tokens outside ``S`` removed (``[MASK]``,
``[PAD]`` or out of the attention: the token ``FILLS``), ``v(S) =
softmax(f(x_S))``. The explainer is FEX-over-tokens' network
(:mod:`~fastxai_jax.explainers.learned.fex_text`: a BERT initialised from the
MiniLM weights, ``full``, ``frozen`` or ``lora``) whose per-token, per-class
actor head emits ``φ(x) [T, C]``; its critic head is unused. The loss is
FastSHAP's (:mod:`~fastxai_jax.explainers.learned.fastshap`): Shapley-kernel
coalitions with paired sampling, additive efficiency normalisation
``φ̃ = φ + (v(1) − v(∅) − Σ_i φ_i)/d`` and the weighted least squares
``E_S ‖v(S) − v(∅) − 1_Sᵀ φ̃‖²`` (:func:`fastshap.fastshap_objective`),
with ``d`` the sentence's own player count: the sampler and the normalisation
below are the image ones restricted to a player mask (they equal
:func:`fastshap.sample_shapley_subsets` and :func:`fastshap.efficiency_normalise`
when every position is a player; the tests check both).

Measured on the text benchmark (``minilm_classifier``; explainer MiniLM frozen,
``fill="drop"``, 8 coalitions, batch 8, Adam 1e-3, 120 steps on 512 training
sentences, 330 s on 2 shared CPU cores; 32 test sentences of seed 4242): token
deletion AUC 0.551 / pointing 0.375, against RISE (500 masks) 0.138 / 0.594
and a random map 0.687 / 0.000; FastSHAP − random: deletion −0.136 [−0.319,
+0.046], pointing +0.375 [+0.219, +0.531] (95% paired bootstrap); 23 ms per
sentence for 32 sentences, no target query.

``explain`` is one explainer forward (no target query): the raw ``φ`` of the
class, which ranks tokens exactly as ``φ̃`` (the normalisation adds one
constant per sentence); :func:`normalised_values` spends the two queries for
the calibrated values.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from fastxai_jax.core import LearnedExplainer, Params, learned_explainer
from fastxai_jax.explainers.learned import fex_text
from fastxai_jax.explainers.learned._config import given_target
from fastxai_jax.explainers.learned._fex_text_reward import masked_probs
from fastxai_jax.explainers.learned.fastshap import fastshap_objective
from fastxai_jax.explainers.learned.fex import frozen_leaves
from fastxai_jax.explainers.tokens import FILLS, TextFns, check_tokens, content_mask


@dataclasses.dataclass(frozen=True)
class TextFastShapConfig:
    """FastSHAP-over-tokens options.

    Attributes:
      num_classes: target classes ``C``.
      backbone_mode: the explainer transformer ``"full"`` (fine-tuned, as
        FastSHAP trains its explainer), ``"frozen"`` (heads only) or ``"lora"``.
      lora_rank, lora_alpha: LoRA ``r`` and ``α``.
      head_hidden: the φ head's MLP width (``None``: the transformer's ``D``).
      num_samples: coalitions per sentence per update (even: paired sampling).
      fill: a removed token becomes ``[MASK]`` (``"mask"``), ``[PAD]``
        (``"pad"``) or leaves the attention (``"drop"``).
    """

    num_classes: int
    backbone_mode: str = "full"
    lora_rank: int = 8
    lora_alpha: float = 32.0
    head_hidden: int | None = None
    num_samples: int = 32
    fill: str = "mask"

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad field."""
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}; got {self.fill!r}")
        for name in ("num_classes", "num_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.num_samples % 2:
            raise ValueError(f"num_samples must be even (paired sampling); got {self.num_samples}")
        self.network().validate()

    def network(self) -> fex_text.TextFexConfig:
        """The explainer network's settings, as FEX over tokens names them."""
        return fex_text.TextFexConfig(
            num_classes=self.num_classes,
            backbone_mode=self.backbone_mode,
            lora_rank=self.lora_rank,
            lora_alpha=self.lora_alpha,
            head_hidden=self.head_hidden,
        )


def sample_player_coalitions(key: jax.Array, players: jax.Array, num_samples: int) -> jax.Array:
    """Paired Shapley-kernel coalitions ``[M, T]`` over the ``d`` positions where ``players``.

    Sizes ``k ∈ [1, d − 1]`` with ``p(k) ∝ 1/(k(d − k))`` (``k = 1`` when ``d = 1``),
    a uniform ``k``-subset of the players, and each subset's complement among
    the players next to it. Non-players are 0 in every row.
    """
    length = players.shape[0]
    count = jnp.sum(players)
    sizes = jnp.arange(1, length)
    allowed = (sizes < count) | (sizes == 1)
    weight = jnp.maximum(sizes * (count - sizes), 1).astype(jnp.float32)
    logits = jnp.where(allowed, -jnp.log(weight), -jnp.inf)
    key_size, key_perm = jax.random.split(key)
    half = num_samples // 2
    k = 1 + jax.random.categorical(key_size, logits, shape=(half,))
    scores = jnp.where(players[None, :], jax.random.uniform(key_perm, (half, length)), 2.0)
    rank = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
    subsets = (rank < k[:, None]).astype(jnp.float32)
    paired = jnp.stack([subsets, players.astype(jnp.float32)[None, :] - subsets], axis=1)
    return jnp.reshape(paired, (num_samples, length))


def efficiency_normalise_players(
    phi: jax.Array, players: jax.Array, v_full: jax.Array, v_empty: jax.Array
) -> jax.Array:
    """``φ + (v(1) − v(∅) − Σ_i φ_i)/d`` on the ``d`` players, 0 elsewhere.

    Args:
      phi: ``[T, C]`` raw values; players: ``[T]`` bool; v_full, v_empty: ``[C]``.
    """
    weights = players.astype(phi.dtype)[:, None]
    gap = v_full - v_empty - jnp.sum(phi * weights, axis=0)
    return (phi + gap[None, :] / jnp.maximum(jnp.sum(weights), 1.0)) * weights


def player_values(config: TextFastShapConfig, module: Any, params: Params, ids, mask) -> jax.Array:
    """Raw ``φ [B, T, C]`` (the explainer's per-token class head), any position."""
    return fex_text.forward(config.network(), module, params, ids, mask)[0]


def _probs(fns: TextFns, target_params: Params, ids, attend) -> jax.Array:
    logits = fns.apply_embeds(target_params, fns.embed(target_params, ids), attend)
    return jax.lax.stop_gradient(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))


def coalition_values(config, fns, target_params, ids, mask, content, coalitions) -> jax.Array:
    """``v(S) [B, M, C]`` for ``coalitions [B, M, T]`` over content tokens (no gradient)."""
    keep = (coalitions > 0.5) | ~content[:, None]
    target_probs = functools.partial(_probs, fns, target_params)
    return masked_probs(target_probs, fns, ids, mask, keep, config.fill)


def normalised_values(
    config: TextFastShapConfig, module: Any, params: Params, fns: TextFns, target_params, x
) -> jax.Array:
    """Efficiency-normalised ``φ̃ [B, T, C]`` (two target queries per sentence):
    ``Σ_t φ̃_t = v(1) − v(∅)``, 0 on [CLS]/[SEP]/padding."""
    ids, mask = fex_text.token_batch(x, "x")
    check_tokens(fns, ids, mask)
    ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)
    content = content_mask(fns, ids, mask)
    ends = jnp.stack([content, jnp.zeros_like(content)], axis=1).astype(jnp.float32)
    values = coalition_values(config, fns, target_params, ids, mask, content, ends)
    phi = player_values(config, module, params, ids, mask)
    return jax.vmap(efficiency_normalise_players)(phi, content, values[:, 0], values[:, 1])


@functools.partial(jax.jit, static_argnames=("config", "module"))
def _explain_jit(config, module, params, ids, mask, content, target):
    phi = player_values(config, module, params, ids, mask) * content[:, :, None]
    if target is None:
        # Σ_t φ_t,y estimates v_y(1) − v_y(∅): the class the sentence adds most to.
        target = jnp.argmax(jnp.sum(phi, axis=1), axis=-1)
    values = jnp.take_along_axis(phi, target[:, None, None], axis=-1)[..., 0]
    return jnp.where(content, values, 0.0)


def make(
    config: TextFastShapConfig,
    fns: TextFns | None,
    target_params: Params,
    *,
    module: Any,
    backbone_params: Params | None = None,
    vocab: TextFns | None = None,
) -> LearnedExplainer:
    """Builds FastSHAP over tokens for the text target ``fns``.

    Args:
      config: :class:`TextFastShapConfig`.
      fns: the target (only ``loss_fn`` queries it; ``None``: explain-only, pass ``vocab``).
      target_params: its params (closed over, never trained).
      module: the explainer transformer (e.g. ``load_minilm()[0]``).
      backbone_params: its initial params (e.g. the MiniLM weights), for ``init_params``.
      vocab: the :class:`TextFns` whose ids/sizes validate inputs (default ``fns``).

    Returns:
      ``LearnedExplainer``: ``loss_fn(params, batch, key)`` with ``batch`` a dict
      of ``input_ids``/``attention_mask`` (``M + 2`` target queries per sentence);
      ``explain(params, (input_ids, attention_mask), target=None) -> [B, T]``
      (``target=None``: the class with the largest ``Σ_t φ_t``), 0 on
      [CLS]/[SEP]/padding, no target query.
    """
    config.validate()
    checked = fex_text.token_input_check(fns, vocab, module)
    network = config.network()

    def init_params_fn(key: jax.Array, sample_batch: Any) -> Params:
        ids, mask, _ = checked(sample_batch, "sample_batch")
        fex_text.check_init(fns, target_params, backbone_params, ids, mask, config.num_classes)
        return fex_text.init_params(network, module, key, backbone_params)

    def loss_fn(params: Params, batch: Any, key: jax.Array):
        ids, mask, content = checked(batch, "batch")
        keys = jax.random.split(key, ids.shape[0])
        sample = functools.partial(sample_player_coalitions, num_samples=config.num_samples)
        subsets = jax.vmap(sample)(keys, content)  # [B, M, T]
        ends = jnp.stack([content, jnp.zeros_like(content)], axis=1).astype(jnp.float32)
        coalitions = jnp.concatenate([ends, subsets], axis=1)  # [B, 2 + M, T]
        values = coalition_values(config, fns, target_params, ids, mask, content, coalitions)
        phi = player_values(config, module, params, ids, mask)
        phi = jax.vmap(efficiency_normalise_players)(phi, content, values[:, 0], values[:, 1])
        per_input = jax.vmap(fastshap_objective)(phi, subsets, values[:, 2:], values[:, 1])
        return jnp.mean(per_input), {"v_full_minus_empty": jnp.mean(values[:, 0] - values[:, 1])}

    def explain(params: Params, x: Any, target: Any = None) -> jax.Array:
        ids, mask, content = checked(x, "x")
        target = given_target(target, ids.shape[0], config.num_classes)
        return _explain_jit(config, module, params, ids, mask, content, target)

    return learned_explainer(
        config, init_params_fn, loss_fn, explain, frozen=frozen_leaves(network)
    )
