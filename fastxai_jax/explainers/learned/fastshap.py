"""FastSHAP — amortised Shapley values (Jethani et al., ICLR 2022; SPEC §6).

Surrogate-free variant over patch players: the value of a coalition ``S`` is
the target's class probabilities with the players outside ``S`` masked (0 in
the target's normalised space), ``v(S) = softmax(f(x ⊙ 1_S))``. An explainer
``φ(x) → [players, classes]`` (the project's ViT with an MLP on every patch
token; one patch = one player) is trained with the Shapley-kernel weighted
least squares loss

    E_{S ∼ p_Shapley} ‖v(S) − v(∅) − 1_Sᵀ φ̃(x)‖²,

``p_Shapley(S) ∝ (d − 1) / (C(d, |S|)·|S|·(d − |S|))`` (sizes ``k`` drawn with
probability ``∝ 1/(k(d − k))``, then a uniform subset), paired sampling (every
``S`` with its complement) and additive efficiency normalisation
``φ̃ = φ + (v(1) − v(∅) − Σ_i φ_i)/d`` so that ``Σ φ̃ = v(1) − v(∅)``.

``backbone="target"`` replaces the ViT by a copy of the target's own trunk
(its feature map ``feature``'s cells are the players; ``patch_size`` must equal
the feature stride), which starts with the target's features instead of
learning them from the value queries alone.

At inference, :func:`explain` needs no target query: the normalisation adds the
same constant to every player, so the raw ``φ`` ranks players exactly as ``φ̃``;
:func:`explain_normalised` spends the two queries (``v(1)``, ``v(∅)``) for the
calibrated values.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fastxai_jax.core import ApplyFn, LearnedExplainer, Params, check_images, learned_explainer
from fastxai_jax.explainers._masks import (
    apply_mask,
    fill_value_01,
    normalise_images,
    patch_grid,
    upsample_bilinear,
    upsample_nearest,
)
from fastxai_jax.explainers.learned import _backbone, _config
from fastxai_jax.explainers.learned._update import adamw_warmup_cosine
from fastxai_jax.models.vit import vit_from_config
from fastxai_jax.substrate import explainer_fill


@dataclasses.dataclass(frozen=True)
class FastShapConfig(_config.BackboneFields):
    """FastSHAP options.

    Attributes:
      num_classes: target classes ``K``.
      image_size: input side.
      patch_size: player (and explainer ViT patch) side; ``d = (image/patch)²``.
      vit_preset, hidden_size, depth, num_heads, mlp_dim: explainer ViT.
      backbone: ``"vit"`` (the project's ViT, fresh) or ``"target"`` (a copy of
        the target's trunk up to ``feature``; pass ``module=`` to :func:`make`).
      feature: the target's ``aux["features"]`` map used by ``backbone="target"``.
      explainer_family: normalisation of the explainer's input.
      target_family: the normalisation ``apply_fn`` applies; masked = ``fill`` there.
      fill: masked value in the target's normalised space, or a
        :class:`~fastxai_jax.substrate.Substrate` (converted there with
        ``to_fill`` when the config is made, e.g. ``Substrate("family_mean")`` is 0).
      num_samples: coalitions per image per update (even: paired sampling).
    """

    num_classes: int
    target_family: str = "imagenet"
    fill: float = 0.0
    num_samples: int = 32

    def __post_init__(self) -> None:
        fill = explainer_fill(self.fill, "normalised", self.target_family)
        object.__setattr__(self, "fill", fill)

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad field."""
        _config.check_positive_ints(
            self, ("num_classes", "image_size", "patch_size", "num_samples")
        )
        if self.num_samples % 2:
            raise ValueError(f"num_samples must be even (paired sampling); got {self.num_samples}")
        _config.check_families(self, ("explainer_family", "target_family"))
        if self.num_players < 2:
            raise ValueError("the player grid must hold at least 2 patches")
        _config.check_choices(self, (("backbone", _backbone.BACKBONES),))

    @property
    def grid(self) -> tuple[int, int]:
        return patch_grid((self.image_size,) * 2, self.patch_size, "image_size")

    @property
    def num_players(self) -> int:
        gh, gw = self.grid
        return gh * gw


class _PlayerHead(nn.Module):
    """``[B, d, D] -> [B, d, K]``; ``norm`` LayerNorms the tokens first (target
    trunks emit unnormalised ReLU features, whose scale would set φ's)."""

    num_classes: int
    norm: bool = False

    @nn.compact
    def __call__(self, tokens):
        if self.norm:
            tokens = nn.LayerNorm(name="norm")(tokens)
        h = nn.gelu(nn.Dense(tokens.shape[-1], name="dense1")(tokens))
        return nn.Dense(self.num_classes, name="dense2")(h)


def init_params(
    config: FastShapConfig,
    key: jax.Array,
    *,
    module: nn.Module | None = None,
    variables: Params | None = None,
) -> Params:
    """Fresh ``{"backbone", "head"}`` parameters.

    With ``backbone="target"`` the backbone is a copy of ``variables`` (the
    target's, for ``module``) and only the head is fresh.
    """
    _backbone.check_backbone(config.backbone, module)
    k1, k2 = jax.random.split(key)
    if config.backbone == "target":
        backbone_params, tokens = _backbone.init_from_target(
            module, variables, config.image_size, config.target_family, config.feature
        )
    else:
        x = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
        backbone = vit_from_config(config)
        backbone_params = backbone.init(k1, x)["params"]
        tokens = jnp.zeros((1, config.num_players, backbone.hidden_size), jnp.float32)
    return {
        "backbone": backbone_params,
        "head": _PlayerHead(config.num_classes, config.backbone == "target").init(k2, tokens)[
            "params"
        ],
    }


def player_values(
    config: FastShapConfig, params: Params, x: jax.Array, module: nn.Module | None = None
) -> jax.Array:
    """Raw explainer output ``φ(x)``: ``[B, players, classes]``.

    ``module``: the target's Flax module, needed for ``backbone="target"``.
    """
    if config.backbone == "target":
        _backbone.check_backbone(config.backbone, module)
        tokens, hw = _backbone.feature_tokens(
            module, params["backbone"], x, config.target_family, config.feature
        )
        if hw != config.grid:
            raise ValueError(
                f"the target's {config.feature!r} map is {hw[0]}x{hw[1]} but the player grid "
                f"is {config.grid[0]}x{config.grid[1]}: set patch_size to the feature stride "
                f"({config.image_size // hw[0]})"
            )
    else:
        _, aux = vit_from_config(config).apply(
            {"params": params["backbone"]}, normalise_images(x, config.explainer_family)
        )
        tokens = aux["patch_tokens"]
    return _PlayerHead(config.num_classes, config.backbone == "target").apply(
        {"params": params["head"]}, tokens
    )


def efficiency_normalise(phi: jax.Array, v_full: jax.Array, v_empty: jax.Array) -> jax.Array:
    """``φ + (v(1) − v(∅) − Σ_i φ_i)/d`` for one input: ``phi [d, K]``, ``v_* [K]``."""
    gap = v_full - v_empty - jnp.sum(phi, axis=0)
    return phi + gap[None, :] / phi.shape[0]


def fastshap_objective(
    phi: jax.Array, subsets: jax.Array, v_subsets: jax.Array, v_empty: jax.Array
) -> jax.Array:
    """``mean_{S, y} (v_y(S) − v_y(∅) − Σ_{i∈S} φ_{i,y})²`` for one input.

    Args:
      phi: ``[d, K]`` (already efficiency-normalised) player values.
      subsets: ``[M, d]`` coalitions in {0, 1}, drawn from the Shapley kernel.
      v_subsets: ``[M, K]`` values ``v(S)``.
      v_empty: ``[K]`` value of the empty coalition.
    """
    predicted = subsets @ phi  # [M, K]
    return jnp.mean((v_subsets - v_empty[None, :] - predicted) ** 2)


def sample_shapley_subsets(key: jax.Array, num_players: int, num_samples: int) -> jax.Array:
    """Paired Shapley-kernel coalitions ``[num_samples, d]``: rows ``2i`` and ``2i+1``
    are complements; sizes ``k ∈ [1, d − 1]`` drawn with ``p(k) ∝ 1/(k(d − k))``."""
    sizes = jnp.arange(1, num_players)
    logits = -jnp.log(sizes * (num_players - sizes).astype(jnp.float32))
    key_size, key_perm = jax.random.split(key)
    half = num_samples // 2
    k = 1 + jax.random.categorical(key_size, logits, shape=(half,))
    scores = jax.random.uniform(key_perm, (half, num_players))
    rank = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
    subsets = (rank < k[:, None]).astype(jnp.float32)
    paired = jnp.stack([subsets, 1.0 - subsets], axis=1)
    return jnp.reshape(paired, (num_samples, num_players))


# FastSHAP's optimizer: AdamW at 2e-4, linear warm-up then cosine decay.
default_optimizer = functools.partial(adamw_warmup_cosine, learning_rate=2e-4)


def make(
    config: FastShapConfig,
    apply_fn: ApplyFn,
    target_params: Params,
    *,
    module: nn.Module | None = None,
) -> LearnedExplainer:
    """FastSHAP as a ``LearnedExplainer``.

    Args:
      config: :class:`FastShapConfig`.
      apply_fn: the target ``apply_fn(target_params, x01) -> logits``.
      target_params: its params (closed over, never trained).
      module: the target's Flax module, for ``backbone="target"`` (the explainer
        starts from a copy of ``target_params``); ignored for ``"vit"``.

    Returns:
      ``LearnedExplainer``: ``loss_fn(params, batch, key) -> (loss, {})`` (``M + 2``
      target queries per image); ``explain(params, x, target=None) -> [B, H, W]``
      (bilinear; ``upsample="nearest"`` keyword for blocks) and ``explain_grid ->
      [B, gh, gw]``, no target query. ``target`` (an int or ``[B]`` ints) selects
      the class's player values; ``None`` the class with the largest ``Σ_i φ_i``.
    """
    config.validate()
    trunk = module if config.backbone == "target" else None
    _backbone.check_backbone(config.backbone, trunk)
    gh, gw = config.grid
    num_players = config.num_players
    fill01 = fill_value_01(config.fill, config.target_family)

    def init_params_fn(key: jax.Array, sample_batch: Any) -> Params:
        x = sample_batch["images"] if isinstance(sample_batch, dict) else sample_batch
        check_images(x, "sample_batch")
        if apply_fn is not None:
            logits = jax.eval_shape(apply_fn, target_params, x[:1])
            if logits.shape != (1, config.num_classes):
                raise ValueError(
                    f"apply_fn must return [B, {config.num_classes}]; got {logits.shape}"
                )
        params = init_params(config, key, module=trunk, variables=target_params)
        player_values(config, params, x[:1], trunk)  # checks the player grid
        return params

    def loss_fn(params: Params, batch: Any, key: jax.Array):
        x = batch["images"] if isinstance(batch, dict) else batch
        batch = x.shape[0]
        keys = jax.random.split(key, batch)
        subsets = jax.vmap(lambda k: sample_shapley_subsets(k, num_players, config.num_samples))(
            keys
        )  # [B, M, d]
        ends = jnp.broadcast_to(jnp.array([1.0, 0.0])[None, :, None], (batch, 2, num_players))
        coalitions = jnp.concatenate([ends, subsets], axis=1)  # [B, 2 + M, d]
        count = coalitions.shape[1]
        pixels = upsample_nearest(jnp.reshape(coalitions, (batch, count, gh, gw)), x.shape[1:3])
        masked = apply_mask(
            jnp.broadcast_to(x[:, None], (batch, count) + x.shape[1:]), pixels, fill01
        )
        logits = apply_fn(target_params, jnp.reshape(masked, (batch * count,) + x.shape[1:]))
        values = jax.lax.stop_gradient(
            jnp.reshape(jax.nn.softmax(logits, axis=-1), (batch, count, -1))
        )
        phi = player_values(config, params, x, trunk)
        phi = jax.vmap(efficiency_normalise)(phi, values[:, 0], values[:, 1])
        per_input = jax.vmap(fastshap_objective)(phi, subsets, values[:, 2:], values[:, 1])
        return jnp.mean(per_input), {}

    def _target(x: Any, target: Any) -> Any:
        check_images(x, "x")
        return _config.given_target(target, x.shape[0], config.num_classes)

    def explain(params: Params, x: Any, target: Any = None, *, upsample: str = "bilinear"):
        if upsample not in ("bilinear", "nearest", "none"):
            raise ValueError(f"upsample must be 'bilinear', 'nearest' or 'none'; got {upsample!r}")
        return _explain_jit(config, params, x, _target(x, target), upsample, trunk)

    def explain_grid(params: Params, x: Any, target: Any = None):
        return _explain_jit(config, params, x, _target(x, target), "none", trunk)

    frozen = _backbone.frozen_non_params if config.backbone == "target" else None
    return learned_explainer(
        config, init_params_fn, loss_fn, explain, explain_grid=explain_grid, frozen=frozen
    )


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _explain_jit(config, params, x, target, upsample, module=None):
    phi = player_values(config, params, x, module)  # [B, d, K]
    if target is None:
        # Σ_i φ_i,y estimates v_y(1) − v_y(∅): explain the class the image adds most to.
        target = jnp.argmax(jnp.sum(phi, axis=1), axis=-1)
    values = phi[jnp.arange(x.shape[0]), :, target]
    grid = jnp.reshape(values, (x.shape[0],) + config.grid)
    if upsample == "none":
        return grid
    if upsample == "nearest":
        return upsample_nearest(grid, x.shape[1:3])
    return upsample_bilinear(grid, x.shape[1:3])


def explain_normalised(
    config: FastShapConfig,
    params: Params,
    apply_fn: ApplyFn,
    target_params: Params,
    x: jax.Array,
    module: nn.Module | None = None,
) -> jax.Array:
    """Efficiency-normalised Shapley values ``[B, players, K]`` (2 target queries).

    ``module``: the target's Flax module, for ``backbone="target"``.
    """
    check_images(x, "x")
    fill01 = fill_value_01(config.fill, config.target_family)
    v_full = jax.nn.softmax(apply_fn(target_params, x), axis=-1)
    v_empty = jax.nn.softmax(
        apply_fn(target_params, apply_mask(x, jnp.zeros(x.shape[:3]), fill01)), axis=-1
    )
    phi = player_values(config, params, x, module)
    return jax.vmap(efficiency_normalise)(phi, v_full, v_empty)
