"""A trained learned explainer (:class:`Trained`) and the class-count check.

A leaf module: :mod:`~fastxai_jax.explainers.registry` and
:mod:`~fastxai_jax.explainers.learned.runs` both import it, so neither imports
the other's callers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from fastxai_jax.core import ApplyFn, LearnedExplainer, Params

__all__ = ["Trained", "check_num_classes"]


class Trained(NamedTuple):
    """A learned explainer with its trained params.

    Attributes:
      method: the method's table name (``"fex"``, ``"ltx"``, ...).
      explainer: the :class:`~fastxai_jax.core.LearnedExplainer`.
      params: its trained params.
      num_classes: the class count of the target it was trained against.
    """

    method: str
    explainer: LearnedExplainer
    params: Params
    num_classes: int | None

    def explain(self, x: Any, target: Any = None) -> jax.Array:
        """``explainer.explain(params, x, target) -> [B, H, W]``."""
        return self.explainer.explain(self.params, x, target)


def check_num_classes(
    num_classes: int | None, apply_fn: ApplyFn, target_params: Params, x: Any, name: str
) -> None:
    """Raises ``ValueError`` naming ``name`` when the target's logits do not have
    ``num_classes`` classes (an explainer built for another target)."""
    if num_classes is None:
        return
    shape = jax.eval_shape(apply_fn, target_params, x).shape
    if len(shape) != 2 or int(shape[-1]) != int(num_classes):
        raise ValueError(
            f"{name}: the target model returns logits of shape {tuple(shape)}, but the "
            f"learned explainer was built for {num_classes} classes"
        )
