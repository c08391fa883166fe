"""LTX — learning to explain (Barkan et al., ICDM 2023; SPEC §4).

The explainer is a copy of the explained backbone with a mask head:

* ViT: per patch token ``Linear(D, D) → tanh → Linear(D, 1) → sigmoid``, the
  patch-grid mask bilinearly upsampled to the image;
* CNN: ``1×1 conv → sigmoid`` on the last feature grid
  (``aux["features"][feature]``), bilinearly upsampled.

The embeddings (patch projection, CLS token, position embeddings) are frozen,
as the authors' ``vit.embeddings``. Objective ``CE(f(x ⊙ m), c) +
λ·mean(softplus(m_tok))`` (the authors' BCE-with-logits-on-a-sigmoid quirk,
``penalty="mean"`` gives ``λ·mean(m_tok)``), masking in ``[0, 1]`` before the
target's own normalisation. Defaults follow the authors' code (LTX-Code/LTX,
checked against it in ``tests/parity/test_ltx_parity.py``):

* the penalty is on the patch-grid (token) mask ``m_tok``
  (``penalty_on="tokens"``); ``"pixels"`` puts it on the upsampled mask;
* ``c = ŷ`` by default, because the ``LearnedExplainer`` contract explains the
  target's prediction without labels; the authors train on the ground truth
  (``train_model_by_target_gt_class``), reachable as ``class_source="label"``.

* Stage A (:func:`make`): pre-training as a ``LearnedExplainer`` (the authors'
  optimizer: :func:`default_optimizer`, AdamW, weight decay 0.01, linear warm-up
  over ``total // 5`` steps from lr 0 then linear decay to 0).
* Stage B (:func:`make_finetune`): per-input fine-tuning from the stage-A
  weights *and* optimiser state, up to 25 epochs of one step on the single
  image. As the authors: each epoch scores the mask from the weights *before*
  its step with the POS AUC (top-1 agreement × 100); a strictly lower AUC
  replaces the best mask, and only on such a new best below ``pos_threshold``
  (authors: 6.0) does it stop. Written for one input and ``vmap``ped over the
  batch, with ``lax.scan`` over the epochs.

The options live in :mod:`._ltx_config` and the authors' recipe pieces in
:mod:`._ltx_recipe`; their public names are importable from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fastxai_jax.core import ApplyFn, LearnedExplainer, Params, check_images, check_target
from fastxai_jax.explainers._masks import normalise_images, upsample_bilinear
from fastxai_jax.explainers.learned._ltx_config import AUTHORS_POS_AUC_STOP, LtxConfig
from fastxai_jax.explainers.learned._ltx_recipe import (
    POS_FRACTIONS,
    default_optimizer,
    linear_warmup_decay,
    pos_auc_from_keep,
    pos_auc_single,
    pos_keep_masks,
)
from fastxai_jax.explainers.learned._update import freeze
from fastxai_jax.train.loop import TrainState

__all__ = [
    "AUTHORS_POS_AUC_STOP",
    "POS_FRACTIONS",
    "LtxConfig",
    "LtxMaskHead",
    "default_optimizer",
    "frozen_leaves",
    "init_explainer_params",
    "linear_warmup_decay",
    "ltx_objective",
    "make",
    "make_finetune",
    "make_grid_masks_fn",
    "make_masks_fn",
    "pos_auc_from_keep",
    "pos_auc_single",
    "pos_keep_masks",
]


class LtxMaskHead(nn.Module):
    """Per-location mask head on ``[B, h, w, D]`` features → ``[B, h, w]`` in (0, 1)."""

    kind: str = "vit"

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        if self.kind == "vit":
            hidden = jnp.tanh(nn.Dense(features.shape[-1], name="dense1")(features))
            logit = nn.Dense(1, name="dense2")(hidden)
        else:
            logit = nn.Conv(1, (1, 1), name="conv1x1")(features)
        return jax.nn.sigmoid(logit[..., 0])


def ltx_objective(
    logits: jax.Array, classes: jax.Array, mask: jax.Array, lam: float, penalty: str = "softplus"
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``mean_b CE(logits_b, c_b) + λ·mean(softplus(m))`` (or ``λ·mean(m)``).

    Args:
      logits: ``[B, K]`` target logits on the masked images.
      classes: ``[B]`` int classes ``c``.
      mask: the penalised masks in ``[0, 1]``: ``[B, h, w]`` token masks (authors)
        or ``[B, H, W]`` pixel masks.
      lam: penalty weight ``λ``.
      penalty: ``"softplus"`` (authors' quirk) or ``"mean"``.

    Returns:
      ``(loss, {"ce", "mask_penalty"})``.
    """
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, classes))
    size = jnp.mean(jax.nn.softplus(mask)) if penalty == "softplus" else jnp.mean(mask)
    return ce + lam * size, {"ce": ce, "mask_penalty": size}


def init_explainer_params(
    config: LtxConfig, backbone: nn.Module, backbone_variables: Params, x: jax.Array, key: jax.Array
) -> Params:
    """``{"backbone": <copy of the backbone params>, "head": <fresh mask head>}``."""
    features = _features(config, backbone, backbone_variables, x)
    head = LtxMaskHead(config.kind).init(key, features)
    return {"backbone": backbone_variables["params"], "head": head["params"]}


def _features(config, backbone, variables, x):
    _, aux = backbone.apply(variables, normalise_images(x, config.family), train=False)
    if config.kind == "vit":
        tokens = aux["patch_tokens"]
        side = int(round(np.sqrt(tokens.shape[1])))
        return jnp.reshape(tokens, (tokens.shape[0], side, side, tokens.shape[-1]))
    return aux["features"][config.feature]


def make_grid_masks_fn(
    config: LtxConfig, backbone: nn.Module, backbone_variables: Params
) -> Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]:
    """``masks(params, x [B, H, W, C]) -> (grid [B, h, w], pixels [B, H, W])``: the
    explainer's patch-grid (token) mask and its bilinear upsampling (half-pixel,
    edge-clamped: torch's ``interpolate(..., align_corners=False)``)."""
    constants = {k: v for k, v in backbone_variables.items() if k != "params"}

    def masks(params, x):
        variables = {**constants, "params": params["backbone"]}
        grid = LtxMaskHead(config.kind).apply(
            {"params": params["head"]}, _features(config, backbone, variables, x)
        )
        return grid, upsample_bilinear(grid, x.shape[1:3])

    return masks


def make_masks_fn(
    config: LtxConfig, backbone: nn.Module, backbone_variables: Params
) -> Callable[[Params, jax.Array], jax.Array]:
    """``masks(params, x [B, H, W, C]) -> [B, H, W]`` in (0, 1): the LTX explainer."""
    grid_masks = make_grid_masks_fn(config, backbone, backbone_variables)
    return lambda params, x: grid_masks(params, x)[1]


def frozen_leaves(config: LtxConfig):
    """``frozen(params) -> pytree of bool``: leaves whose path holds a ``config.frozen``
    fragment (the patch embedding) get zero updates."""

    def frozen(params: Params) -> Any:
        def is_frozen(path, _):
            names = "/".join(str(getattr(p, "key", p)) for p in path)
            return any(fragment in names for fragment in config.frozen)

        return jax.tree_util.tree_map_with_path(is_frozen, params)

    return frozen


def _images_labels(batch: Any) -> tuple[jax.Array, jax.Array | None]:
    if isinstance(batch, dict):
        return batch["images"], batch.get("labels")
    return batch, None


def _make_loss(config, apply_fn, target_params, grid_masks_fn):
    def loss_fn(params, x, classes):
        grid, mask = grid_masks_fn(params, x)
        logits = apply_fn(target_params, x * mask[..., None])
        penalised = grid if config.penalty_on == "tokens" else mask
        return ltx_objective(logits, classes, penalised, config.lam, config.penalty)

    return loss_fn


def make(
    config: LtxConfig,
    apply_fn: ApplyFn,
    target_params: Params,
    *,
    module: nn.Module,
    backbone_variables: Params | None = None,
) -> LearnedExplainer:
    """Stage A of LTX as a ``LearnedExplainer``.

    Args:
      config: :class:`LtxConfig`.
      apply_fn: the explained target ``apply_fn(target_params, x01) -> logits``.
      target_params: its params (closed over, never trained).
      module: the target's Flax module (returns ``(logits, aux)``); the
        explainer starts as a copy of it.
      backbone_variables: the variables to copy (default ``target_params``).

    Returns:
      ``LearnedExplainer``: ``loss_fn(params, batch, key)`` (``batch``: images
      ``[B, H, W, C]`` or a dict with ``"images"`` and, for
      ``class_source="label"``, ``"labels"``); ``explain(params, x, target=None)
      -> [B, H, W]`` masks in (0, 1). LTX's mask is trained for the target's
      predicted class and cannot be conditioned on another: ``explain`` refuses a
      ``target`` that is not ``None``.
    """
    config.validate()
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be the target's Flax module; got {type(module).__name__}")
    backbone_variables = target_params if backbone_variables is None else backbone_variables
    grid_masks_fn = make_grid_masks_fn(config, module, backbone_variables)
    masks_fn = make_masks_fn(config, module, backbone_variables)
    objective = _make_loss(config, apply_fn, target_params, grid_masks_fn)

    def init_params(key: jax.Array, sample_batch: Any) -> Params:
        x, _ = _images_labels(sample_batch)
        check_images(x, "sample_batch")
        return init_explainer_params(config, module, backbone_variables, x[:1], key)

    def loss_fn(params: Params, batch: Any, key: jax.Array):
        del key  # deterministic masks
        x, labels = _images_labels(batch)
        if config.class_source == "label":
            if labels is None:
                raise ValueError("class_source='label' needs a batch dict with 'labels'")
            classes = jnp.asarray(labels, jnp.int32)
        else:
            classes = jnp.argmax(jax.lax.stop_gradient(apply_fn(target_params, x)), axis=-1)
        return objective(params, x, classes)

    explain_jit = jax.jit(masks_fn)

    def explain(params: Params, x: Any, target: Any = None) -> jax.Array:
        check_images(x, "x")
        if target is not None:
            raise ValueError(
                "target: LTX explains the target's predicted class only (its mask head has "
                f"no class input); pass target=None, got {target!r}"
            )
        return explain_jit(params, x)

    return LearnedExplainer(
        config=config,
        init_params=init_params,
        loss_fn=loss_fn,
        explain=explain,
        num_classes=getattr(module, "num_classes", None),
        target_queries_per_explain=0,
        frozen=frozen_leaves(config),
        conditions_on_class=False,
    )


def make_finetune(
    config: LtxConfig,
    optimizer: optax.GradientTransformation,
    apply_fn: ApplyFn,
    target_params: Params,
    *,
    module: nn.Module,
    backbone_variables: Params | None = None,
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
    """Stage B: ``finetune(state, x, target=None) -> (masks [B, H, W], info)``.

    ``optimizer``: stage A's optimizer (its frozen leaves are added here, as
    ``optimizer_for`` does in stage A), whose state (step count included) stage
    B continues. Each input starts from the stage-A ``state.params`` and
    ``state.opt_state`` and runs up to ``finetune_steps`` epochs, as the
    authors' ``..._opt.py``: epoch ``e`` computes the mask from the current
    weights, takes one AdamW step on its loss, then scores that (pre-step) mask
    with the POS AUC; a strictly lower AUC (the best starts at +inf) makes it
    the best mask, and only then, if below ``pos_threshold``, stage B stops.
    Inputs are independent: the batch is ``vmap``ped, so the result equals
    fitting each input alone. ``info`` (``[B, ...]``): ``"best_pos_auc"``,
    ``"best_step"`` (0-based epoch of the kept mask), ``"pos_auc"`` and
    ``"loss"`` per epoch (NaN after a stop), ``"epochs_run"``, ``"stopped_early"``.

    With :func:`default_optimizer`'s linear decay a stage A run to its
    ``total_steps`` leaves lr 0 for stage B: size ``total_steps`` to cover both
    stages, or use ``schedule="constant"`` in both (the benchmark's recipe).
    """
    config.validate()
    backbone_variables = target_params if backbone_variables is None else backbone_variables
    grid_masks_fn = make_grid_masks_fn(config, module, backbone_variables)
    loss_fn = _make_loss(config, apply_fn, target_params, grid_masks_fn)
    optimizer = freeze(optimizer, frozen_leaves(config))
    threshold = -jnp.inf if config.pos_threshold is None else config.pos_threshold

    def single(params, opt_state, x, target):
        x1, c1 = x[None], target[None]

        def step(carry, _):
            params, opt_state, best_mask, best_auc, best_step, done, epoch = carry
            mask = grid_masks_fn(params, x1)[1][0]
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x1, c1)
            updates, new_opt_state = optimizer.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            params = jax.tree.map(lambda n, o: jnp.where(done, o, n), new_params, params)
            opt_state = jax.tree.map(lambda n, o: jnp.where(done, o, n), new_opt_state, opt_state)
            auc = pos_auc_single(apply_fn, target_params, x, mask, target, config.pos_score)
            better = (auc < best_auc) & ~done
            carry = (
                params,
                opt_state,
                jnp.where(better, mask, best_mask),
                jnp.where(better, auc, best_auc),
                jnp.where(better, epoch, best_step),
                done | (better & (auc < threshold)),
                epoch + 1,
            )
            nan = jnp.asarray(jnp.nan, auc.dtype)
            return carry, (jnp.where(done, nan, loss), jnp.where(done, nan, auc), ~done)

        zero = jnp.zeros((), jnp.int32)
        mask0 = jnp.zeros(x.shape[:2], x.dtype)
        init = (
            params,
            opt_state,
            mask0,
            jnp.asarray(jnp.inf, x.dtype),
            zero,
            jnp.asarray(False),
            zero,
        )
        carry, (losses, aucs, ran) = jax.lax.scan(step, init, None, length=config.finetune_steps)
        _, _, best_mask, best_auc, best_step, done, _ = carry
        info = {
            "best_pos_auc": best_auc,
            "pos_auc": aucs,
            "loss": losses,
            "best_step": best_step,
            "epochs_run": jnp.sum(ran.astype(jnp.int32)),
            "stopped_early": done,
        }
        return best_mask, info

    batched = jax.jit(jax.vmap(single, in_axes=(None, None, 0, 0)))

    def finetune(state: TrainState, x: Any, target: Any = None):
        check_images(x, "x")
        logits = apply_fn(target_params, x)
        if target is None:
            target = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        check_target(target, x.shape[0], logits.shape[-1])
        return batched(state.params, state.opt_state, x, jnp.asarray(target, jnp.int32))

    return finetune
