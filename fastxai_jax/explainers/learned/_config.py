"""What the learned explainers share at their boundary: the explainer ViT's
config fields, the checks of their option tables and of an explain-time target.

FEX, FastSHAP and TVE build their explainer ViT with
:func:`fastxai_jax.models.vit.vit_from_config` from the same fields;
:class:`VitFields` declares them once, and :class:`BackboneFields` adds the
choice of the target's own trunk instead. They are keyword-only, so a config's
own required field (``num_classes``, ``embed_dim``) stays its first positional
argument. Saved runs are loaded by field name (``runs.load``), so the order of
the fields does not matter to them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.core import check_target
from fastxai_jax.explainers import _common
from fastxai_jax.models.normalization import FAMILY_NORMALISATION


@dataclasses.dataclass(frozen=True, kw_only=True)
class VitFields:
    """The explainer network of a learned explainer's config: a ViT by default.

    Attributes:
      image_size: input side.
      patch_size: ViT patch side.
      vit_preset: ``vit_ti16``/``vit_s16``/``vit_b16``; the fields below override it.
      hidden_size, depth, num_heads, mlp_dim: ViT sizes (``None`` = the preset's).
      explainer_family: normalisation the explainer applies to its ``[0, 1]`` input.
    """

    image_size: int = 224
    patch_size: int = 16
    vit_preset: str = "vit_ti16"
    hidden_size: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_dim: int | None = None
    explainer_family: str = "imagenet"


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackboneFields(VitFields):
    """:class:`VitFields` or, with ``backbone="target"``, a copy of the target's trunk
    (see :mod:`._backbone`; FastSHAP and TVE).

    Attributes:
      backbone: ``"vit"`` (the project's ViT, fresh) or ``"target"`` (a copy of
        the target's trunk up to ``feature``; pass ``module=`` to ``make``).
      feature: the target module's ``aux["features"]`` map used by ``"target"``.
    """

    backbone: str = "vit"
    feature: str = "conv_last"


def check_positive_ints(config: Any, names: Iterable[str]) -> None:
    """Raises ``ValueError`` naming the first of ``names`` that is not a positive int."""
    for name in names:
        _common.validate_positive(name, getattr(config, name))


def check_choices(config: Any, table: Iterable[tuple[str, Sequence]]) -> None:
    """Raises ``ValueError`` naming the first ``(name, choices)`` whose value is not a choice."""
    for name, choices in table:
        _common.check_choice(name, getattr(config, name), choices)


def check_families(config: Any, names: Iterable[str]) -> None:
    """Raises ``ValueError`` naming the first of ``names`` that is no normalisation family."""
    check_choices(config, ((name, sorted(FAMILY_NORMALISATION)) for name in names))


def given_target(target: Any, batch_size: int, num_classes: int) -> jax.Array | None:
    """``[B]`` int32 classes from an ``explain`` call's ``target``: an int for every
    input or ``[B]`` ints; ``None`` stays ``None`` (the method's own default, ŷ).

    Raises:
      ValueError: naming ``target`` (a bool, a wrong shape, a class outside ``[0, K)``).
    """
    if target is None:
        return None
    if isinstance(target, bool):
        raise ValueError(f"target must be an int class index or [B] ints; got {target!r}")
    if isinstance(target, list | tuple):
        target = np.asarray(target)
    if jnp.ndim(target) == 0:
        target = jnp.full((batch_size,), target)
    check_target(target, batch_size, num_classes)
    return jnp.asarray(target, jnp.int32)
