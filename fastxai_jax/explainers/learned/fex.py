"""FEX: an explainer trained once by policy gradient (Pan, Moniz, Chawla; IJCAI 2025).

SPEC §2. A ViT explainer reads the image and emits, per patch token, one logit
per class (actor) and, on CLS, one value per class (critic). The policy keeps
patch ``l`` with probability ``σ(actor[l, ŷ])``; ``K`` masks per image are
scored by the target in one batched call, rewarded with
``p_f(ŷ | x ⊙ m)·L / (Σm + 1)`` and trained with PPO or REINFORCE (critic
baseline) plus ``KL(p_f(·|x) ‖ μ)``. After training, ``explain`` is a single
explainer forward pass — no target query.

Defaults follow the authors' code (pd90506/FastExplanation, ``maskgen/trainer.py``)
wherever it is more specific than the paper: PPO consumes each rollout in
``B·K // ppo_minibatch_size`` minibatch steps (the paper only names PPO; one step
on fresh samples would be REINFORCE), the entropy bonus is the mean over patches
(the paper's ``H(π)`` fixes no reduction; their ``l_entropy`` is calibrated for
the mean), ε-greedy randomises a whole mask. The alternatives stay options:
``loss="reinforce"`` (one step per rollout), ``entropy_reduction="sum"``,
``epsilon_scope="patch"``. See :mod:`._fex_ppo` for the rollout and the loss,
:mod:`._fex_config` for the options (:class:`FexConfig`, importable from here).

Usage::

    learned = fex.make(fex.FexConfig(num_classes=10, image_size=64, patch_size=8),
                       apply_fn, target_params)
    init, update = make_trainer(learned, make_optimizer("adam", 5e-5))
    state = init(key, images[:8])
    state, metrics = update(state, images[:32], key)    # rollout + minibatch steps
    heat = learned.explain(state.params, images)       # [B, 64, 64] in (0, 1)
    grid = learned.explain_grid(state.params, images)  # [B, 8, 8]
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from fastxai_jax.core import ApplyFn, LearnedExplainer, Params, check_images, learned_explainer
from fastxai_jax.explainers._masks import (
    normalise_images,
    patch_grid,
    upsample_bilinear,
    upsample_nearest,
)
from fastxai_jax.explainers.learned import _config, _fex_ppo
from fastxai_jax.explainers.learned import _fex_losses as losses
from fastxai_jax.explainers.learned._fex_config import FexConfig
from fastxai_jax.explainers.learned._fex_ppo import policy_logits
from fastxai_jax.explainers.learned._lora import lora_init, lora_merge
from fastxai_jax.models.heads import ActorCriticHeads
from fastxai_jax.models.vit import ViT, vit_from_config


def build_backbone(config: FexConfig) -> ViT:
    """The explainer's ViT (its classifier head is unused)."""
    backbone = vit_from_config(config)
    if config.layer_norm_eps is not None:
        backbone = backbone.clone(layer_norm_eps=float(config.layer_norm_eps))
    return backbone


def _heads(config: FexConfig, backbone: ViT) -> ActorCriticHeads:
    return ActorCriticHeads(config.head_hidden or backbone.hidden_size, config.num_classes)


def init_params(config: FexConfig, key: jax.Array, backbone_params: Params | None = None) -> Params:
    """Initial explainer params ``{"backbone", "heads"[, "lora"]}``.

    Args:
      config: the FEX config.
      key: PRNG key.
      backbone_params: optional ViT params (or ``{"params": ...}`` variables) to
        start from, e.g. the target ViT's; shapes must match the configured ViT
        (its classifier head may differ and is replaced).
    """
    config.validate()
    backbone = build_backbone(config)
    bb_key, head_key, lora_key = jax.random.split(key, 3)
    size = config.image_size
    dummy = jnp.zeros((1, size, size, 3), jnp.float32)
    fresh = backbone.init(bb_key, dummy)["params"]
    if backbone_params is not None:
        given = backbone_params.get("params", backbone_params)
        given = {**dict(given), "head": fresh["head"]}
        want = jax.tree.map(jnp.shape, fresh)
        got = jax.tree.map(jnp.shape, given)
        if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
            raise ValueError(
                "backbone_params do not match the configured ViT "
                f"(hidden_size/depth/num_heads/mlp_dim/patch_size/image_size): expected {want}, "
                f"got {got}"
            )
        fresh = jax.tree.map(jnp.asarray, given)
    tokens = jnp.zeros((1, config.grid[0] * config.grid[1], backbone.hidden_size))
    heads = _heads(config, backbone).init(head_key, tokens, tokens[:, 0])["params"]
    if config.initial_keep is not None:
        shift = math.log(config.initial_keep / (1.0 - config.initial_keep))
        heads = _shift_output_bias(heads, "actor", shift)
    params = {"backbone": fresh, "heads": heads}
    if config.backbone_mode == "lora":
        params["lora"] = lora_init(lora_key, fresh, rank=config.lora_rank)
    return params


def _shift_output_bias(heads: Params, name: str, shift: float) -> Params:
    """Adds ``shift`` to the bias of the last dense layer of head ``name``."""
    head = dict(heads[name])
    last = max(head, key=lambda layer: int(layer.removeprefix("dense")))
    head[last] = {**head[last], "bias": head[last]["bias"] + shift}
    return {**heads, name: head}


def frozen_leaves(config: FexConfig) -> Any:
    """``frozen(params) -> pytree of bool``: the backbone in ``frozen``/``lora``
    mode (zero update, no optimizer moments), ``None`` for ``full``."""
    if config.backbone_mode == "full":
        return None

    def frozen(params: Params) -> Any:
        return {name: jax.tree.map(lambda _, n=name: n == "backbone", sub)
                for name, sub in params.items()}  # fmt: skip

    return frozen


def forward(config: FexConfig, params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Explainer forward: ``x [B, H, W, 3]`` in [0, 1] → ``(actor [B, L, C], values [B, C])``."""
    backbone = build_backbone(config)
    bb = params["backbone"]
    if config.backbone_mode != "full":
        bb = jax.lax.stop_gradient(bb)  # frozen: no backward through the backbone weights
    if config.backbone_mode == "lora":
        bb = lora_merge(bb, params["lora"], alpha=config.lora_alpha, rank=config.lora_rank)
    _, aux = backbone.apply({"params": bb}, normalise_images(x, config.explainer_family))
    return _heads(config, backbone).apply(
        {"params": params["heads"]}, aux["patch_tokens"], aux["cls"]
    )


def _images(batch: Any) -> jax.Array:
    return batch["images"] if isinstance(batch, dict) else batch


def _check_input(config: FexConfig, x: Any, name: str) -> None:
    check_images(x, name)
    height, width = x.shape[1:3]
    patch_grid((height, width), config.patch_size, name)
    if (height, width) != (config.image_size, config.image_size) or x.shape[-1] != 3:
        raise ValueError(
            f"{name} must be [B, {config.image_size}, {config.image_size}, 3]; got {x.shape}"
        )


def _check_logits(config: FexConfig, apply_fn: ApplyFn, target_params: Params, x) -> None:
    shape = jax.eval_shape(apply_fn, target_params, x).shape
    expected = (x.shape[0], config.num_classes)
    if tuple(shape) != expected:
        raise ValueError(
            f"apply_fn must return logits of shape {expected} (batch, num_classes); got {shape}"
        )


def make(
    config: FexConfig,
    apply_fn: ApplyFn | None,
    target_params: Params,
    *,
    backbone_params: Params | None = None,
    module: Any = None,
) -> LearnedExplainer:
    """Builds FEX for the target ``apply_fn(target_params, x01) -> logits``.

    Args:
      config: :class:`FexConfig`.
      apply_fn: the target (any framework), taking ``[0, 1]`` images; only
        ``init_params``/``loss_fn`` query it (``None`` for an explain-only FEX).
      target_params: the target's params (closed over, never trained).
      backbone_params: optional ViT params to initialise the explainer from.
      module: unused (FEX's explainer is its own ViT); accepted so that every
        learned method's ``make`` has one signature.

    Returns:
      ``LearnedExplainer``: ``loss_fn(params, batch, key)`` (``batch``:
      ``[B, H, W, 3]`` or a dict with ``"images"``; ``B·(K + 1)`` target
      queries; its ``rollout`` attribute makes ``make_trainer``/``runs.fit`` run
      the minibatch PPO, see :mod:`._fex_ppo`); ``explain(params, x,
      target=None) -> [B, H, W]`` (bilinear) and
      ``explain_grid -> [B, gh, gw]``, one explainer forward, no target query:
      ``target`` (an int or ``[B]`` ints) selects the class's actor output;
      ``None`` explains the explainer's own predicted class.
    """
    del module
    config.validate()
    size = config.image_size

    def init_params_fn(key: jax.Array, sample_batch: Any) -> Params:
        x = _images(sample_batch)
        _check_input(config, x, "sample_batch")
        if apply_fn is not None:  # an explain-only FEX (runs.load) has no target
            _check_logits(config, apply_fn, target_params, x)
            logits = apply_fn(target_params, x)
            if not isinstance(logits, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(logits))):
                raise ValueError(
                    "apply_fn returned NaN/Inf logits on sample_batch: rewards would be NaN"
                )
        return init_params(config, key, backbone_params)

    def check_batch(x: Any) -> None:
        _check_input(config, x, "batch")
        _check_logits(config, apply_fn, target_params, x)

    forward_fn = lambda params, x: forward(config, params, x)
    loss_fn = _fex_ppo.make_loss(config, forward_fn, apply_fn, target_params, check_batch)

    grid_jit = jax.jit(lambda params, x, target: explain_grid(config, params, x, target))
    pixels_jit = jax.jit(
        lambda params, x, target: upsample(explain_grid(config, params, x, target), (size, size))
    )

    def _target(x: Any, target: Any) -> Any:
        _check_input(config, x, "x")
        return _config.given_target(target, x.shape[0], config.num_classes)

    def explain_grid_fn(params: Params, x: Any, target: Any = None) -> jax.Array:
        return grid_jit(params, x, _target(x, target))

    def explain(params: Params, x: Any, target: Any = None) -> jax.Array:
        return pixels_jit(params, x, _target(x, target))

    frozen = frozen_leaves(config)
    return learned_explainer(
        config, init_params_fn, loss_fn, explain, explain_grid=explain_grid_fn, frozen=frozen
    )


def explain_grid(
    config: FexConfig, params: Params, x: jax.Array, target: jax.Array | None = None
) -> jax.Array:
    """FEX heatmap, the policy's keep probability per patch: ``[B, gh, gw]`` in (0, 1).

    ``σ(actor_logit[ŷ])`` for ``policy="sigmoid"``, ``softmax_c(actor)[ŷ]`` for
    ``policy="softmax"`` (see :func:`policy_logits`).

    No target-model query: with ``target=None`` the class explained is the
    argmax of the explainer's own class distribution
    ``μ = softmax(mean_tokens(log_softmax(actor)))``, which training matches to
    ``p_f(·|x)`` through the KL term; pass ``target [B]`` (e.g. the target's
    prediction, if already known) to explain a given class.
    """
    actor, _ = forward(config, params, x)
    if target is None:
        target = jnp.argmax(jax.vmap(losses.token_class_distribution)(actor), axis=-1)
    heat = jax.nn.sigmoid(policy_logits(actor, jnp.asarray(target, jnp.int32), config.policy))
    gh, gw = config.grid
    return heat.reshape((x.shape[0], gh, gw))


def upsample(heatmap: jax.Array, image_hw: tuple[int, int], method: str = "bilinear") -> jax.Array:
    """``[B, gh, gw]`` → ``[B, H, W]`` by ``"bilinear"`` (smooth, for ranking and
    display) or ``"nearest"`` (blocky, the mask the policy acts on)."""
    if method == "nearest":
        return upsample_nearest(heatmap, image_hw)
    if method == "bilinear":
        return upsample_bilinear(heatmap, image_hw)
    raise ValueError(f"method must be 'bilinear' or 'nearest'; got {method!r}")
