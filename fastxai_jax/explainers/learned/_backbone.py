"""The target's own trunk as a learned explainer's backbone.

FastSHAP and TVE default to the project's ViT trained from scratch. On a small
budget such a backbone has to learn the target's visual features before it
can say anything per patch; starting from a copy of the target's (or its
encoder's) trunk — as LTX does, and as FastSHAP's authors start from a
pre-trained network — gives it those features at step 0. The feature map's
cells become the tokens: ``aux["features"][feature]`` ``[B, h, w, D]`` →
``[B, h·w, D]``.

Variables other than ``"params"`` (e.g. BatchNorm statistics) are copied too
and kept frozen by :func:`freeze_non_params`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fastxai_jax.core import Params
from fastxai_jax.models.normalization import normalise

BACKBONES = ("vit", "target")


def check_backbone(backbone: str, module: Any) -> None:
    """Raises ``ValueError`` for an unknown ``backbone`` or ``"target"`` without a module."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}; got {backbone!r}")
    if backbone == "target" and not isinstance(module, nn.Module):
        raise ValueError(
            "backbone='target' needs module= (the target's Flax module, returning "
            f"(logits, aux) with aux['features']); got {type(module).__name__}"
        )


def feature_tokens(
    module: nn.Module, variables: Params, x01: jax.Array, family: str, feature: str
) -> tuple[jax.Array, tuple[int, int]]:
    """``([B, h·w, D] tokens, (h, w))`` from the module's feature map ``feature``."""
    _, aux = module.apply(variables, normalise(x01, family), train=False)
    features = aux.get("features", {}) if isinstance(aux, dict) else {}
    if feature not in features:
        raise ValueError(
            f"feature {feature!r} is not in the module's aux['features'] (has {sorted(features)})"
        )
    fmap = features[feature]
    if fmap.ndim != 4:
        raise ValueError(f"feature {feature!r} must be [B, h, w, D]; got shape {fmap.shape}")
    batch, h, w, dim = fmap.shape
    return jnp.reshape(fmap, (batch, h * w, dim)), (h, w)


def copy_variables(variables: Params) -> Params:
    """A fresh copy (new buffers) of the target's variables for the explainer to train."""
    return jax.tree.map(jnp.array, dict(variables))


def init_from_target(
    module: nn.Module, variables: Params | None, image_size: int, family: str, feature: str
) -> tuple[Params, jax.Array]:
    """``(copy of variables, zero tokens [1, h·w, D])``: the backbone parameters of a
    ``backbone="target"`` explainer and a token batch to initialise its head on.

    Raises:
      ValueError: if ``variables`` is missing.
    """
    if variables is None:
        raise ValueError("backbone='target' needs variables= (the target's variables)")
    params = copy_variables(variables)
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    shape = jax.eval_shape(lambda v: feature_tokens(module, v, x, family, feature)[0], params)
    return params, jnp.zeros(shape.shape, shape.dtype)


def frozen_non_params(params: Params) -> Any:
    """``True`` at the backbones' non-``"params"`` collections (BatchNorm statistics
    and the like; every top-level ``"backbone*"`` entry), which get zero updates;
    ``False`` elsewhere."""

    def is_frozen(path, _):
        keys = [str(getattr(p, "key", p)) for p in path]
        return len(keys) > 1 and keys[0].startswith("backbone") and keys[1] != "params"

    return jax.tree_util.tree_map_with_path(is_frozen, params)


def freeze_non_params(
    optimizer: optax.GradientTransformation, params: Params
) -> optax.GradientTransformation:
    """``optimizer`` for every leaf except :func:`frozen_non_params`'s (zero updates)."""
    labels = jax.tree.map(lambda f: "frozen" if f else "train", frozen_non_params(params))
    return optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()}, labels)
