"""The method table's record types and its two image tables' storage.

Imported by :mod:`~fastxai_jax.explainers.registry` (which fills
:data:`METHODS` and :data:`LEARNED_METHODS` and re-exports everything here) and
by :mod:`~fastxai_jax.explainers._registry_tokens` (which needs the image
tables only to name an image-only method in its error), so that neither of the
two imports the other's half of the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from fastxai_jax.core import Cost, LearnedExplainer


class MethodSpec(NamedTuple):
    """A per-input attribution method.

    Attributes:
      fn: the batched method (see :mod:`~fastxai_jax.explainers.registry`).
      cost: ``cost(**options) -> Cost`` per input.
      needs_key: whether the method is stochastic and needs a PRNG key.
      needs_grad: whether the method differentiates the target.
    """

    fn: Callable[..., Any]
    cost: Callable[..., Cost]
    needs_key: bool = False
    needs_grad: bool = True


class LearnedSpec(NamedTuple):
    """A learned (amortised) explainer.

    Attributes:
      config_cls: its frozen-dataclass config.
      make: ``make(config, apply_fn, target_params, *, module=None) -> LearnedExplainer``.
      target_queries_per_explain: target (or encoder) forwards per input of one
        ``explain`` (TVE: 1, the classifier's prediction through its encoder).
    """

    config_cls: type
    make: Callable[..., LearnedExplainer]
    target_queries_per_explain: int = 0


def _no_cost(**_: Any) -> Cost:
    return Cost(0, 0)


def _one_pass_cost(**_: Any) -> Cost:
    return Cost(1, 1)


METHODS: dict[str, MethodSpec] = {}
"""Per-input image methods by (lower-case) name; filled by ``registry``."""

LEARNED_METHODS: dict[str, LearnedSpec] = {}
"""Learned image methods by (lower-case) name; filled by ``registry``."""
