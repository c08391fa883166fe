"""The text half of the method table (issue 21): methods over token positions.

A text target is a :class:`~fastxai_jax.explainers.tokens.TextFns`; an
attribution is ``[B, T]`` with padding exactly 0. Every public name here is
re-exported by :mod:`~fastxai_jax.explainers.registry` (use it from there:
``registry.TOKEN_METHODS``, ``registry.attribute_tokens``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from fastxai_jax.core import Cost, Params
from fastxai_jax.explainers import tokens
from fastxai_jax.explainers._registry_specs import LEARNED_METHODS, METHODS, LearnedSpec
from fastxai_jax.explainers.dax_tokens import token_dax
from fastxai_jax.explainers.learned import fastshap_text, fex_text
from fastxai_jax.explainers.learned._trained import Trained


class TokenMethodSpec(NamedTuple):
    """A per-input method over tokens.

    Attributes:
      fn: ``fn(fns, params, input_ids, attention_mask, target, **options) -> [B, T]``.
      cost_name: its name for :func:`~fastxai_jax.explainers.tokens.token_method_cost`.
      needs_key: whether it is stochastic (``key=`` required).
      needs_grad: whether it differentiates the target.
    """

    fn: Callable[..., Any]
    cost_name: str
    needs_key: bool = False
    needs_grad: bool = True


TOKEN_METHODS: dict[str, TokenMethodSpec] = {
    "saliency": TokenMethodSpec(tokens.token_saliency, "saliency"),
    "input_x_gradient": TokenMethodSpec(tokens.token_input_x_gradient, "input_x_gradient"),
    "ig": TokenMethodSpec(tokens.token_integrated_gradients, "integrated_gradients"),
    "integrated_gradients": TokenMethodSpec(
        tokens.token_integrated_gradients, "integrated_gradients"
    ),
    "smoothgrad": TokenMethodSpec(tokens.token_smoothgrad, "smoothgrad", needs_key=True),
    "mfaba": TokenMethodSpec(tokens.token_mfaba, "mfaba"),
    "rise": TokenMethodSpec(tokens.token_rise, "rise", needs_key=True, needs_grad=False),
    "random": TokenMethodSpec(tokens.token_random, "random", needs_key=True, needs_grad=False),
    "dax": TokenMethodSpec(token_dax, "dax", needs_key=True, needs_grad=False),
}
"""Per-input methods over tokens (the target is a :class:`~.tokens.TextFns`)."""

TOKEN_LEARNED_METHODS: dict[str, LearnedSpec] = {
    "fex": LearnedSpec(fex_text.TextFexConfig, fex_text.make, 0),
    "fastshap": LearnedSpec(fastshap_text.TextFastShapConfig, fastshap_text.make, 0),
}
"""Learned methods over tokens (``make(config, fns, target_params, *, module, ...)``)."""


def token_method_cost(method: str, **options: Any) -> Cost:
    """Target passes per sentence of a text method (from ``tokens.token_method_cost``)."""
    key = _check_text_method(method)
    name = key if key in TOKEN_LEARNED_METHODS else TOKEN_METHODS[key].cost_name
    return Cost(*tokens.token_method_cost(name, **options))


def _text_methods() -> list[str]:
    """Sorted text method names (``registry.available_methods("text")``)."""
    return sorted([*TOKEN_METHODS, *TOKEN_LEARNED_METHODS])


def _check_text_method(method: Any) -> str:
    key = method.lower() if isinstance(method, str) else method
    if key in TOKEN_METHODS or key in TOKEN_LEARNED_METHODS:
        return key
    if key in METHODS or key in LEARNED_METHODS:
        raise ValueError(
            f"method {method!r} is image-only and cannot explain text; text methods: "
            f"{', '.join(_text_methods())}"
        )
    raise ValueError(f"unknown method {method!r}; text methods: {', '.join(_text_methods())}")


def attribute_tokens(
    method: str,
    fns: tokens.TextFns,
    params: Params,
    x: Any,
    target: Any = None,
    *,
    key: Any = None,
    explainer: Any = None,
    **options: Any,
) -> jax.Array:
    """Explains a text target over tokens: ``[B, T]``, padding exactly 0.

    Args:
      method: a name from ``available_methods("text")``.
      fns: the target (:class:`~fastxai_jax.explainers.tokens.TextFns`).
      params: its params.
      x: ``(input_ids, attention_mask)`` or a dict of them, ``[B, T]`` each.
      target: ``None`` (predicted class; learned: the explainer's own), an int or ``[B]`` ints.
      key: PRNG key of stochastic methods.
      explainer: for ``"fex"`` / ``"fastshap"``, the trained explainer
        (``runs.Trained`` over tokens).
      **options: the method's options.

    Raises:
      ValueError: naming the bad argument (``method`` image-only, ``x``, ``key``, ...).
    """
    name = _check_text_method(method)
    ids, mask = fex_text.token_batch(x, "x")
    tokens.check_tokens(fns, ids, mask)
    if name in TOKEN_LEARNED_METHODS:
        config_cls = TOKEN_LEARNED_METHODS[name].config_cls
        if not isinstance(explainer, Trained) or not isinstance(
            explainer.explainer.config, config_cls
        ):
            raise ValueError(
                f"explainer: method {method!r} over text needs a trained {name} over tokens "
                f"({config_cls.__name__}); got {type(explainer).__name__}"
            )
        if options:
            raise ValueError(f"learned method {method!r} takes no options; got {sorted(options)}")
        return explainer.explain((ids, mask), target)
    if explainer is not None:
        raise ValueError(f"explainer= is for learned methods; {method!r} is per-input")
    spec = TOKEN_METHODS[name]
    if spec.needs_key:
        if key is None:
            raise ValueError(f"method {method!r} is stochastic: pass key=jax.random.key(...)")
        options["key"] = key
    if isinstance(target, int | np.integer) and not isinstance(target, bool):
        target = np.full((np.shape(ids)[0],), int(target), np.int32)
    return spec.fn(fns, params, ids, mask, target, **options)
