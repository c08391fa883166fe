"""LTX — learning to explain (Barkan et al., ICDM 2023; SPEC §4).

The explainer is a copy of the explained backbone with a mask head:

* ViT: per patch token ``Linear(D, D) → tanh → Linear(D, 1) → sigmoid``, the
  patch-grid mask bilinearly upsampled to the image;
* CNN: ``1×1 conv → sigmoid`` on the last feature grid
  (``aux["features"][feature]``), bilinearly upsampled.

Patch embeddings are frozen. Objective ``CE(f(x ⊙ m), c) + λ·mean(softplus(m))``
(the authors' BCE-with-logits-on-a-sigmoid quirk; ``penalty="mean"`` gives the
plain ``λ·mean(m)``), masking in ``[0, 1]`` before the target's own
normalisation, ``c = ŷ`` (or the label).

* Stage A (:func:`make`): pre-training as a ``LearnedExplainer`` (the authors'
  optimizer: :func:`default_optimizer`, AdamW with 20 % linear warm-up).
* Stage B (:func:`make_finetune`): per-input fine-tuning from the stage-A
  weights *and* optimiser state, up to 25 steps on the single image, keeping the
  mask with the best (lowest) POS-perturbation AUC and stopping once it is below
  ``pos_threshold``. Written for one input and ``vmap``ped over the batch, with
  ``lax.scan`` over the steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fastxai_jax.core import ApplyFn, LearnedExplainer, Params, check_images, check_target
from fastxai_jax.explainers._masks import normalise_images, upsample_bilinear
from fastxai_jax.explainers.learned._update import freeze
from fastxai_jax.models.normalization import FAMILY_NORMALISATION
from fastxai_jax.train.loop import TrainState, make_optimizer

_KINDS = ("vit", "cnn")
_PENALTIES = ("softplus", "mean")
_SCORES = ("top1", "prob")
POS_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(10))


@dataclasses.dataclass(frozen=True)
class LtxConfig:
    """LTX options (authors' values as defaults where they apply).

    Attributes:
      kind: ``"vit"`` (per-patch-token head) or ``"cnn"`` (1×1 conv head).
      family: normalisation the backbone copy applies to its ``[0, 1]`` input.
      feature: CNN feature map name in ``aux["features"]``.
      lam: penalty weight (authors: 50 ViT-B, 30 ViT-S).
      penalty: ``"softplus"`` (authors) or ``"mean"``.
      class_source: ``"predicted"`` (``ŷ``) or ``"label"`` (batch ``"labels"``).
      frozen: parameter-name fragments kept fixed (the patch embedding).
      finetune_steps: stage-B steps per input (authors: 25).
      pos_score: ``"top1"`` (LTX) or ``"prob"`` for the stage-B POS AUC.
      pos_threshold: stage-B early stop once the best POS AUC is below this.
    """

    kind: str = "vit"
    family: str = "imagenet"
    feature: str = "conv_last"
    lam: float = 30.0
    penalty: str = "softplus"
    class_source: str = "predicted"
    frozen: tuple[str, ...] = ("patch_embed",)
    finetune_steps: int = 25
    pos_score: str = "top1"
    pos_threshold: float | None = None

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad field."""
        for name, value, choices in (
            ("kind", self.kind, _KINDS),
            ("penalty", self.penalty, _PENALTIES),
            ("class_source", self.class_source, ("predicted", "label")),
            ("pos_score", self.pos_score, _SCORES),
            ("family", self.family, tuple(FAMILY_NORMALISATION)),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}; got {value!r}")
        for name in ("finetune_steps",):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0; got {self.lam}")


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
      mask: ``[B, H, W]`` masks in ``[0, 1]``.
      lam: penalty weight ``λ``.
      penalty: ``"softplus"`` (authors' quirk) or ``"mean"``.

    Returns:
      ``(loss, {"ce", "mask_penalty"})``.
    """
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, classes))
    size = jnp.mean(jax.nn.softplus(mask)) if penalty == "softplus" else jnp.mean(mask)
    return ce + lam * size, {"ce": ce, "mask_penalty": size}


def pos_auc_single(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    saliency: jax.Array,
    target: jax.Array,
    score: str = "top1",
) -> jax.Array:
    """POS perturbation AUC of one input (lower is better), as in SPEC §7.

    Deletes (zero in ``[0, 1]``) the top ``int(F·p)`` pixels for
    ``p = 0, 0.1, …, 0.9`` (ties broken by index), scores top-1 agreement with
    ``target`` (or its probability) and returns ``100 × 0.9 ×`` the normalised
    trapezoid — :func:`fastxai_jax.metrics.pos_neg_perturbation`'s ``"pos"``.

    Args:
      x: ``[H, W, C]``; saliency: ``[H, W]``; target: scalar int.
    """
    num = saliency.size
    order = jnp.argsort(-jnp.reshape(saliency, (-1,)), stable=True)
    rank = jnp.zeros((num,), jnp.int32).at[order].set(jnp.arange(num, dtype=jnp.int32))
    counts = jnp.asarray([int(num * p) for p in POS_FRACTIONS], jnp.int32)
    keep = (rank[None, :] >= counts[:, None]).astype(x.dtype)
    keep = jnp.reshape(keep, (len(POS_FRACTIONS),) + saliency.shape + (1,))
    logits = apply_fn(params, keep * x[None])
    if score == "top1":
        curve = (jnp.argmax(logits, axis=-1) == target).astype(x.dtype)
    else:
        curve = jax.nn.softmax(logits, axis=-1)[:, target]
    auc = (jnp.sum(curve) - 0.5 * curve[0] - 0.5 * curve[-1]) / (curve.shape[0] - 1)
    return 100.0 * POS_FRACTIONS[-1] * auc


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


def make_masks_fn(
    config: LtxConfig, backbone: nn.Module, backbone_variables: Params
) -> Callable[[Params, jax.Array], jax.Array]:
    """``masks(params, x [B, H, W, C]) -> [B, H, W]`` in (0, 1): the LTX explainer."""
    constants = {k: v for k, v in backbone_variables.items() if k != "params"}

    def masks(params, x):
        variables = {**constants, "params": params["backbone"]}
        grid = LtxMaskHead(config.kind).apply(
            {"params": params["head"]}, _features(config, backbone, variables, x)
        )
        return upsample_bilinear(grid, x.shape[1:3])

    return masks


def default_optimizer(
    total_steps: int,
    *,
    learning_rate: float = 2e-3,
    warmup_frac: float = 0.2,
    weight_decay: float = 1e-2,
) -> optax.GradientTransformation:
    """The authors' AdamW: linear warm-up, then constant (so stage B continues at
    the peak rate)."""
    return make_optimizer(
        "adamw",
        learning_rate,
        warmup_frac=warmup_frac,
        total_steps=total_steps,
        schedule="constant",
        weight_decay=weight_decay,
    )


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


def _make_loss(config, apply_fn, target_params, masks_fn):
    def loss_fn(params, x, classes):
        mask = masks_fn(params, x)
        logits = apply_fn(target_params, x * mask[..., None])
        return ltx_objective(logits, classes, mask, config.lam, config.penalty)

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
    masks_fn = make_masks_fn(config, module, backbone_variables)
    objective = _make_loss(config, apply_fn, target_params, masks_fn)

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
    ``optimizer_for`` does in stage A), whose state stage B continues.
    Each input starts from the stage-A ``state.params`` and ``state.opt_state``,
    takes up to ``finetune_steps`` AdamW steps on its own loss and keeps the mask
    with the lowest POS AUC (the stage-A mask included; ties keep the earlier);
    once the best AUC is below ``pos_threshold`` it stops updating. Inputs are
    independent: the batch is ``vmap``ped, so the result equals fitting each
    input alone. ``info``: ``"best_pos_auc" [B]``, ``"pos_auc" [B, steps]``,
    ``"loss" [B, steps]``, ``"best_step" [B]`` (0 = the stage-A mask).
    """
    config.validate()
    backbone_variables = target_params if backbone_variables is None else backbone_variables
    masks_fn = make_masks_fn(config, module, backbone_variables)
    loss_fn = _make_loss(config, apply_fn, target_params, masks_fn)
    optimizer = freeze(optimizer, frozen_leaves(config))
    threshold = -jnp.inf if config.pos_threshold is None else config.pos_threshold

    def single(params, opt_state, x, target):
        x1, c1 = x[None], target[None]

        def pos(p):
            mask = masks_fn(p, x1)[0]
            return mask, pos_auc_single(apply_fn, target_params, x, mask, target, config.pos_score)

        mask0, auc0 = pos(params)

        def step(carry, index):
            params, opt_state, best_mask, best_auc, best_step = carry
            done = best_auc < threshold
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x1, c1)
            updates, new_opt_state = optimizer.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            params = jax.tree.map(lambda n, o: jnp.where(done, o, n), new_params, params)
            opt_state = jax.tree.map(lambda n, o: jnp.where(done, o, n), new_opt_state, opt_state)
            mask, auc = pos(params)
            better = (auc < best_auc) & ~done
            carry = (
                params,
                opt_state,
                jnp.where(better, mask, best_mask),
                jnp.where(better, auc, best_auc),
                jnp.where(better, index + 1, best_step),
            )
            return carry, (loss, auc)

        init = (params, opt_state, mask0, auc0, jnp.zeros((), jnp.int32))
        (_, _, best_mask, best_auc, best_step), (losses, aucs) = jax.lax.scan(
            step, init, jnp.arange(config.finetune_steps)
        )
        info = {"best_pos_auc": best_auc, "pos_auc": aucs, "loss": losses, "best_step": best_step}
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
