"""TVE's network (Wang et al., ICML 2024; SPEC §5): the pos and neg branches, each
a backbone (the project's ViT, or a copy of the encoder's trunk) and a mixing
head that predicts the encoder's embedding of every grid cell. Re-exported by
:mod:`fastxai_jax.explainers.learned.tve`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fastxai_jax.core import Params
from fastxai_jax.explainers._masks import normalise_images
from fastxai_jax.explainers.learned import _backbone
from fastxai_jax.explainers.learned._tve_config import TveConfig
from fastxai_jax.models.tve_head import TveAuthorsHead, TveHead
from fastxai_jax.models.vit import vit_from_config


def build_backbone(config: TveConfig) -> nn.Module:
    """The generic backbone ViT (its classifier head is unused)."""
    return vit_from_config(config)


def _head(config: TveConfig) -> nn.Module:
    if config.arch == "authors":
        return TveAuthorsHead(config.grid**2, config.embed_dim, config.head_layers)
    return TveHead(
        config.grid**2,
        config.embed_dim,
        config.head_hidden,
        config.head_layers,
        local_init=config.head_init == "local",
    )


def _backbone_names(config: TveConfig) -> tuple[str, str]:
    """Params keys of the pos and neg backbones (one shared in ``arch="shared"``)."""
    return ("backbone", "backbone_neg") if config.arch == "authors" else ("backbone", "backbone")


def init_params(
    config: TveConfig,
    key: jax.Array,
    *,
    module: nn.Module | None = None,
    variables: Params | None = None,
) -> Params:
    """Fresh ``{"backbone", "pos", "neg"}`` parameters (``arch="authors"`` adds
    ``"backbone_neg"``: ``"backbone"`` is then the pos branch's).

    With ``backbone="target"`` each backbone is a copy of ``variables`` (the
    encoder module's) and only the heads are fresh.
    """
    _backbone.check_backbone(config.backbone, module)
    keys = jax.random.split(key, 4)
    backbones = {}
    for name, bkey in zip(sorted(set(_backbone_names(config))), keys[2:], strict=False):
        if config.backbone == "target":
            backbones[name], _ = _backbone.init_from_target(
                module, variables, config.image_size, config.encoder_family, config.feature
            )
        else:
            x = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
            backbones[name] = build_backbone(config).init(bkey, x)["params"]
    x = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
    tokens = jax.eval_shape(lambda p: _tokens(config, p, x, module), backbones["backbone"])
    tokens = jnp.zeros(tokens.shape, tokens.dtype)
    head = _head(config)
    return {
        **backbones,
        "pos": head.init(keys[0], tokens)["params"],
        "neg": head.init(keys[1], tokens)["params"],
    }


def _tokens(config: TveConfig, backbone_params: Params, x: jax.Array, module) -> jax.Array:
    """One backbone's tokens ``[B, T, D]`` (``arch="authors"`` ViT: CLS first)."""
    if config.backbone == "target":
        _backbone.check_backbone(config.backbone, module)
        tokens, _ = _backbone.feature_tokens(
            module, backbone_params, x, config.encoder_family, config.feature
        )
        return tokens
    x_norm = normalise_images(x, config.explainer_family)
    _, aux = build_backbone(config).apply({"params": backbone_params}, x_norm)
    if config.arch == "authors":
        return jnp.concatenate([aux["cls"][:, None], aux["patch_tokens"]], axis=1)
    return aux["patch_tokens"]


def predict_embeddings(
    config: TveConfig, params: Params, x: jax.Array, module: nn.Module | None = None
) -> tuple[jax.Array, jax.Array]:
    """Per-cell predicted encoder embeddings ``(pos, neg)``, each ``[B, S², E]`` in
    ``config.cell_order`` token order (the authors' extra last token dropped).

    ``module``: the encoder's Flax module, needed for ``backbone="target"``.
    """
    name_pos, name_neg = _backbone_names(config)
    tokens_pos = _tokens(config, params[name_pos], x, module)
    tokens_neg = (
        tokens_pos if name_neg == name_pos else _tokens(config, params[name_neg], x, module)
    )
    head = _head(config)
    cells = config.grid**2
    return (
        head.apply({"params": params["pos"]}, tokens_pos)[:, :cells],
        head.apply({"params": params["neg"]}, tokens_neg)[:, :cells],
    )
