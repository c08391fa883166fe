"""FEX over tokens (Pan, Moniz, Chawla; IJCAI 2025, the paper's text setting).

The same policy as :mod:`~fastxai_jax.explainers.learned.fex`, with tokens in
place of patches: an explainer transformer (a BERT initialised from the
MiniLM weights; ``full``, ``frozen`` or ``lora``) emits one actor logit per
class on every token and a critic value per class on [CLS]. The policy keeps
content token ``t`` (a real token other than [CLS]/[SEP]) with probability
``σ(actor[t, ŷ])``; ``K`` masks per sentence are scored by the target in one
batched call, a removed token becoming ``[MASK]`` (default), ``[PAD]`` (the
attention mask kept) or leaving the attention (``fill="drop"``). The reward is
``p_f(ŷ | x ⊙ m)·n / (Σm + 1)`` over the sentence's ``n`` content tokens, and
the losses are FEX's own (:mod:`._fex_losses`: PPO or REINFORCE with the
critic baseline, plus ``KL(p_f(·|x) ‖ μ)`` with μ averaged over content
tokens). ``explain`` is one explainer forward: no target query.

The default fill is ``[MASK]``: the public FastExplanation repository has no
text code and the paper's text does not name the replacement token, so the
default is BERT's masking token; on ``minilm_classifier`` (a linear head on the
mean-pooled encoder) ``fill="drop"`` trains better. The defaults are the paper's
(critic advantage, reward scaled by ``n / (Σm + 1)``); ``advantage="loo"`` and
``reward_scale="none"`` are options (``reward="deletion"`` too, see
:mod:`._fex_text_reward`), used by the demo's recipe with the measured
reasons in ``evaluation.text.demo_fex_config``.

Usage::

    module, variables = load_minilm(num_classes=2)
    learned = fex_text.make(fex_text.TextFexConfig(num_classes=2, fill="drop"),
                            fns, target_params, module=module, backbone_params=variables)
    trained, _ = runs_fit_tokens(...)  # or make_update(learned.loss_fn, optimizer)
    relevance = learned.explain(params, (input_ids, attention_mask))  # [B, T]
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from fastxai_jax.core import LearnedExplainer, Params, learned_explainer
from fastxai_jax.explainers.learned import _fex_losses as losses
from fastxai_jax.explainers.learned._config import given_target
from fastxai_jax.explainers.learned._fex_text_reward import (  # noqa: F401 (re-exported)
    REWARDS,
    loo_advantage,
    mask_rewards,
    masked_inputs,
)
from fastxai_jax.explainers.learned._lora import default_lora_predicate, lora_init, lora_merge
from fastxai_jax.explainers.learned._text_inputs import (  # noqa: F401 (re-exported)
    check_init,
    token_batch,
    token_input_check,
)
from fastxai_jax.explainers.learned.fex import frozen_leaves, policy_logits  # same rule
from fastxai_jax.explainers.tokens import FILLS, TextFns
from fastxai_jax.models.heads import ActorCriticHeads

_MODES = ("full", "frozen", "lora")
_LOSSES = ("ppo", "reinforce")
_BASELINES = ("none", "empty")
_POLICIES = ("sigmoid", "softmax")
_ADVANTAGES = ("critic", "loo")
_SCALES = ("size", "none")
_RELEVANCES = ("probability", "logit")
_OFF = 50.0  # keep logit of non-content tokens: σ(50) = 1, log-prob and entropy ≈ 0


@dataclasses.dataclass(frozen=True)
class TextFexConfig:
    """FEX-over-tokens hyper-parameters (loss weights: the authors', as :class:`FexConfig`).

    Attributes:
      num_classes: target classes ``C``.
      backbone_mode: ``"full"`` fine-tuning, ``"frozen"`` (heads only) or ``"lora"``.
      lora_rank, lora_alpha: LoRA ``r`` and ``α`` (authors: 8, 32).
      head_hidden: actor/critic MLP width (``None`` = the transformer's ``D``).
      num_masks: ``K`` masks per sentence per update (authors: 5).
      loss: ``"ppo"`` (one epoch on fresh samples) or ``"reinforce"``.
      clip_eps, actor_coef, value_coef, entropy_coef, kl_coef: loss weights.
      fill: ``"mask"`` ([MASK]), ``"pad"`` ([PAD], attention kept) or ``"drop"``.
      reward_baseline: ``"none"`` (the paper) or ``"empty"`` (subtract
        ``p_f(ŷ | every content token removed)``).
      policy: ``"sigmoid"`` (``σ(actor[ŷ])``) or ``"softmax"`` (``softmax_c(actor)[ŷ]``).
      initial_keep: ``None`` or the untrained policy's keep probability ``q``.
      advantage: ``"critic"`` (the paper: ``r − V(ŷ)``) or ``"loo"`` (``r`` minus the
        mean reward of the sentence's other ``K − 1`` masks, a leave-one-out
        baseline; the critic is still trained).
      reward_scale: ``"size"`` (the paper: ``× n / (Σm + 1)``) or ``"none"`` (the
        reward is the probability gain alone, no pressure towards small masks).
      reward: ``"sufficiency"`` (the paper: ``p_f(ŷ | x ⊙ m)``) or ``"deletion"``
        (not the paper's: minus ``p_f(ŷ | x ⊙ (1 − m))``, crediting the tokens whose
        removal hurts; ``B·K`` more target queries per step, none at explain time).
      relevance: what ``explain`` returns on content tokens: ``"probability"`` (the
        paper's keep probability ``σ(z)``) or ``"logit"`` (the keep logit ``z``, the
        same ranking without float32 saturation: ``σ(z)`` rounds to 1.0 above
        ``z ≈ 16.6``, which ties the tokens a trained policy always keeps and lets
        position break the tie in top-1 metrics). Explain-time only.
    """

    num_classes: int
    backbone_mode: str = "full"
    lora_rank: int = 8
    lora_alpha: float = 32.0
    head_hidden: int | None = None
    num_masks: int = 5
    loss: str = "ppo"
    clip_eps: float = 0.2
    actor_coef: float = 1.0
    value_coef: float = 0.5
    entropy_coef: float = 1e-4
    kl_coef: float = 1.0
    fill: str = "mask"
    reward_baseline: str = "none"
    policy: str = "sigmoid"
    initial_keep: float | None = None
    advantage: str = "critic"
    reward_scale: str = "size"
    reward: str = "sufficiency"
    relevance: str = "probability"

    def target_queries_per_step(self, batch_size: int) -> int:
        """Target forward passes (sentences) per training step on ``batch_size``
        sentences: the clean input, ``K`` masks, ``K`` complements with
        ``reward="deletion"``, the empty input with ``reward_baseline="empty"``."""
        per = 1 + self.num_masks * (2 if self.reward == "deletion" else 1)
        return batch_size * (per + (self.reward_baseline == "empty"))

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad field."""
        for name, allowed in (
            ("backbone_mode", _MODES),
            ("loss", _LOSSES),
            ("fill", FILLS),
            ("reward_baseline", _BASELINES),
            ("policy", _POLICIES),
            ("advantage", _ADVANTAGES),
            ("reward_scale", _SCALES),
            ("reward", REWARDS),
            ("relevance", _RELEVANCES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {getattr(self, name)!r}")
        for name in ("num_classes", "num_masks", "lora_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.policy == "softmax" and self.num_classes < 2:
            raise ValueError("policy='softmax' needs num_classes >= 2; got 1")
        if self.advantage == "loo" and self.num_masks < 2:
            raise ValueError(f"advantage='loo' needs num_masks >= 2; got {self.num_masks}")
        if self.initial_keep is not None and not 0.0 < float(self.initial_keep) < 1.0:
            raise ValueError(f"initial_keep must be None or in (0, 1); got {self.initial_keep!r}")


def _lora_predicate(path: tuple[str, ...], leaf: jax.Array) -> bool:
    return path[0] != "classifier" and default_lora_predicate(path, leaf)


def init_params(config: TextFexConfig, module: Any, key: jax.Array, backbone_params: Params):
    """``{"backbone", "heads"[, "lora"]}``: a copy of ``backbone_params`` (the
    transformer's ``{"params": ...}`` or bare params) and fresh actor/critic heads."""
    config.validate()
    backbone = jax.tree.map(jnp.array, dict(backbone_params.get("params", backbone_params)))
    head_key, lora_key = jax.random.split(key)
    tokens = jnp.zeros((1, 2, module.hidden_size), jnp.float32)
    heads = _heads(config, module).init(head_key, tokens, tokens[:, 0])["params"]
    if config.initial_keep is not None:
        shift = math.log(config.initial_keep / (1.0 - config.initial_keep))
        actor = dict(heads["actor"])
        actor["dense2"] = {**actor["dense2"], "bias": actor["dense2"]["bias"] + shift}
        heads = {**heads, "actor": actor}
    params = {"backbone": backbone, "heads": heads}
    if config.backbone_mode == "lora":
        params["lora"] = lora_init(
            lora_key, backbone, rank=config.lora_rank, predicate=_lora_predicate
        )
    return params


def _heads(config: TextFexConfig, module: Any) -> ActorCriticHeads:
    return ActorCriticHeads(config.head_hidden or module.hidden_size, config.num_classes)


def forward(config: TextFexConfig, module: Any, params: Params, ids, mask):
    """Explainer forward: ``(actor [B, T, C], values [B, C])`` (critic on [CLS])."""
    bb = params["backbone"]
    if config.backbone_mode != "full":
        bb = jax.lax.stop_gradient(bb)
    if config.backbone_mode == "lora":
        bb = lora_merge(bb, params["lora"], alpha=config.lora_alpha, rank=config.lora_rank)
    _, aux = module.apply({"params": bb}, ids, attention_mask=mask)
    hidden = aux["hidden_states"]
    return _heads(config, module).apply({"params": params["heads"]}, hidden, hidden[:, 0])


def class_distribution(actor: jax.Array, content: jax.Array) -> jax.Array:
    """``log μ [B, C]``: FEX's ``log_softmax(mean_t log_softmax(actor_t))`` over content tokens."""
    weights = content.astype(jnp.float32)[:, :, None]
    mean = jnp.sum(jax.nn.log_softmax(actor, -1) * weights, 1) / jnp.maximum(weights.sum(1), 1.0)
    return jax.nn.log_softmax(mean, axis=-1)


def _kl(target_probs: jax.Array, log_mu: jax.Array) -> jax.Array:
    p = jax.lax.stop_gradient(target_probs)
    log_p = jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
    return jnp.sum(p * (log_p - log_mu), axis=-1)


@functools.partial(jax.jit, static_argnames=("config", "module"))
def _explain_jit(config, module, params, ids, mask, content, target):
    actor, _ = forward(config, module, params, ids, mask)
    if target is None:
        target = jnp.argmax(class_distribution(actor, content), axis=-1)
    logit = policy_logits(actor, target.astype(jnp.int32), config.policy)
    heat = logit if config.relevance == "logit" else jax.nn.sigmoid(logit)
    return jnp.where(content, heat, 0.0)


def make(
    config: TextFexConfig,
    fns: TextFns | None,
    target_params: Params,
    *,
    module: Any,
    backbone_params: Params | None = None,
    vocab: TextFns | None = None,
) -> LearnedExplainer:
    """Builds FEX over tokens for the text target ``fns`` (:class:`TextFns`).

    Args:
      config: :class:`TextFexConfig`.
      fns: the target; only ``loss_fn`` queries it (``None``: explain-only,
        then pass ``vocab`` for the special ids and sizes).
      target_params: the target's params (closed over, never trained).
      module: the explainer transformer (a :class:`~fastxai_jax.models.bert.BertClassifier`,
        e.g. ``load_minilm()[0]``), returning ``aux["hidden_states"]``.
      backbone_params: its initial params (e.g. the MiniLM weights); required by
        ``init_params``.
      vocab: the :class:`TextFns` whose ids/sizes validate inputs (default ``fns``).

    Returns:
      ``LearnedExplainer``: ``loss_fn(params, batch, key)`` with ``batch`` a dict
      of ``input_ids``/``attention_mask`` ``[B, T]`` (``B·(K + 1)`` target queries,
      ``B·(2K + 1)`` with ``reward="deletion"``, ``B`` more with the empty baseline);
      ``explain(params, (input_ids, attention_mask), target=None) -> [B, T]`` in
      ``[0, 1)`` with padding and [CLS]/[SEP] exactly 0, one explainer forward.
    """
    config.validate()
    checked = token_input_check(fns, vocab, module)

    def init_params_fn(key: jax.Array, sample_batch: Any) -> Params:
        ids, mask, _ = checked(sample_batch, "sample_batch")
        check_init(fns, target_params, backbone_params, ids, mask, config.num_classes)
        return init_params(config, module, key, backbone_params)

    def target_probs(ids, attend):
        logits = fns.apply_embeds(target_params, fns.embed(target_params, ids), attend)
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    def loss_fn(params: Params, batch: Any, key: jax.Array):
        ids, mask, content = checked(batch, "batch")
        batch_size, length = ids.shape
        k = config.num_masks
        clean = target_probs(ids, mask)
        classes = jnp.argmax(clean, axis=-1)
        actor, values = forward(config, module, params, ids, mask)
        logits = jnp.where(content, policy_logits(actor, classes, config.policy), _OFF)
        logits_bk = jnp.broadcast_to(logits[:, None], (batch_size, k, length))
        keep = jax.random.bernoulli(key, jax.nn.sigmoid(logits_bk)) | ~content[:, None]
        keep = jax.lax.stop_gradient(keep.astype(jnp.float32))
        reward, kept_prob = mask_rewards(
            target_probs, fns, ids, mask, content, keep, classes, config
        )
        count = jnp.sum(content, axis=1).astype(jnp.float32)[:, None]
        value = jnp.take_along_axis(values, classes[:, None], axis=-1)
        value_bk = jnp.broadcast_to(value, (batch_size, k))
        weights = losses.LossWeights(config.actor_coef, config.value_coef, config.entropy_coef)
        if config.advantage == "loo":
            adv = loo_advantage(reward)
        else:
            adv = jax.lax.stop_gradient(reward - value_bk)
        if config.loss == "ppo":
            old = jax.lax.stop_gradient(jax.vmap(jax.vmap(losses.policy_log_prob))(logits_bk, keep))
            episode = lambda z, m, o, r, v, a: losses.ppo_loss(
                z, m, o, r, v, clip_eps=config.clip_eps, weights=weights, advantage=a
            )
            loss_bk, terms = jax.vmap(jax.vmap(episode))(
                logits_bk, keep, old, reward, value_bk, adv
            )
        else:
            episode = lambda z, m, r, v, a: losses.reinforce_loss(
                z, m, r, v, weights=weights, advantage=a
            )
            loss_bk, terms = jax.vmap(jax.vmap(episode))(logits_bk, keep, reward, value_bk, adv)
        kl = _kl(clean, class_distribution(actor, content))
        loss = jnp.mean(loss_bk) + config.kl_coef * jnp.mean(kl)
        metrics = {
            "reward": jnp.mean(reward),
            "target_prob_masked": jnp.mean(kept_prob),
            "keep_fraction": jnp.mean(jnp.sum(keep * content[:, None], -1) / count),
            "value_loss": jnp.mean(terms.value),
            "actor_loss": jnp.mean(terms.actor),
            "entropy": jnp.mean(terms.entropy),
            "kl": jnp.mean(kl),
        }
        return loss, metrics

    def explain(params: Params, x: Any, target: Any = None) -> jax.Array:
        ids, mask, content = checked(x, "x")
        target = given_target(target, ids.shape[0], config.num_classes)
        return _explain_jit(config, module, params, ids, mask, content, target)

    return learned_explainer(config, init_params_fn, loss_fn, explain, frozen=frozen_leaves(config))


def is_text_run(saved: Any, method: str = "fex") -> bool:
    """Whether a run's saved record (``{"method", "config", ...}``) is ``method`` over
    tokens (a token config has ``fill`` and no ``image_size``)."""
    fields = saved.get("config", {}) if isinstance(saved, dict) else {}
    return (
        isinstance(saved, dict)
        and saved.get("method") == method
        and isinstance(fields, dict)
        and "fill" in fields
        and "image_size" not in fields
    )


def load(
    workdir: Any,
    fns: TextFns,
    *,
    module: Any,
    backbone_params: Params | None = None,
    method: str = "fex",
    config_cls: Any = None,
    make_fn: Any = None,
) -> Any:
    """Reads a learned token explainer saved by ``runs.save`` / ``runs.fit`` into a
    ``Trained`` (FEX over tokens by default; ``runs.load(workdir, fns=fns,
    module=module)`` reaches it for every method of ``registry.TOKEN_LEARNED_METHODS``).

    Args:
      workdir: the run directory (holding ``explainer/``).
      fns: the text target (its vocabulary validates inputs; never queried).
      module: the explainer transformer of the same shapes as at training (e.g.
        ``load_minilm()[0]``); the saved params hold all its weights.
      backbone_params: unused beyond its shapes (optional; kept for old callers).
      method, config_cls, make_fn: the saved method's name, config class and
        ``make`` (default: FEX over tokens).

    Raises:
      FileNotFoundError: no ``workdir/explainer``.
      ValueError: the run is not ``method`` over tokens, or ``fns``/``module`` is missing.
    """
    import pathlib

    from fastxai_jax.explainers.learned._trained import Trained
    from fastxai_jax.train.checkpoint import load_params

    config_cls, make_fn = config_cls or TextFexConfig, make_fn or make
    path = pathlib.Path(workdir) / "explainer"
    if not path.exists():
        raise FileNotFoundError(f"no trained explainer in {path}")
    _, saved = load_params(path)
    if not is_text_run(saved, method):
        raise ValueError(f"{path} does not hold {method} over tokens (config {saved!r})")
    if not isinstance(fns, TextFns):
        raise ValueError(f"fns must be the TextFns of the text target; got {type(fns).__name__}")
    if module is None:
        raise ValueError("module is required (the explainer transformer, e.g. load_minilm()[0])")
    known = {f.name for f in dataclasses.fields(config_cls)}
    config = config_cls(**{k: v for k, v in saved["config"].items() if k in known})
    learned = make_fn(config, fns, None, module=module)
    network = config.network() if hasattr(config, "network") else config
    ids, key = jnp.zeros((1, 2), jnp.int32), jax.random.key(0)
    template = jax.eval_shape(
        lambda: init_params(network, module, key, module.init(key, ids)["params"])
    )
    params, _ = load_params(path, template=template)
    num_classes = saved.get("num_classes") or config.num_classes
    return Trained(method, learned, jax.tree.map(jnp.asarray, params), num_classes)
