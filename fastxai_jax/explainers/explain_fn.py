"""One ``explain(x, target, key)`` for any method of the table, and the table as text.

:func:`make_explain_fn` turns a method name of
:mod:`fastxai_jax.explainers.registry` (per-input, or learned and loaded from a
checkpoint with :func:`fastxai_jax.explainers.learned.runs.load`) into a batch
function and its declared cost, for a Flax target ``(module, variables,
family)``; :func:`describe_methods` lists the table with kinds and costs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax

from fastxai_jax.explainers import registry

# Grad-CAM's layer per zoo model, when none is given.
DEFAULT_LAYERS = {
    "small_cnn": "conv_last",
    "vgg16": "features",
    "efficientnet_lite0": "head",
    **{f"resnet{d}": "layer4" for d in (18, 34, 50, 101, 152)},
}

ExplainFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def make_explain_fn(
    method: str,
    module: Any,
    variables: Any,
    family: str,
    *,
    model: str | None = None,
    options: dict[str, Any] | None = None,
    explainer_ckpt: str | os.PathLike | None = None,
    target_given: bool = False,
) -> tuple[ExplainFn, dict[str, int]]:
    """``explain(x01, target, key) -> [B, H, W]`` for ``method`` and its cost per input.

    A learned method is loaded once, here, from ``explainer_ckpt`` (the loader
    refuses a target whose class count differs from the trained one); ``target``
    reaches it only when it conditions on a class, and ``key`` is unused.
    Grad-CAM gets ``module``, ``family`` and, unless ``options`` name one, the
    default layer of ``model`` (:data:`DEFAULT_LAYERS`).

    Args:
      method: a name of :func:`registry.available_methods` (any case).
      module, variables, family: the target (:func:`fastxai_jax.models.build`).
      model: the target's zoo name (Grad-CAM's default layer).
      options: the method's keyword options (none for a learned method).
      explainer_ckpt: a learned method's run directory (required for one).
      target_given: a class will be passed as ``target`` (refused by a learned
        method that explains the predicted class only).

    Returns:
      ``(explain, {"forward": F, "backward": B})``, the target queries per input.

    Raises:
      ValueError: unknown ``method``, a learned method without ``explainer_ckpt``
        or with ``options`` or an unsupported ``target_given``, bad option names.
    """
    from fastxai_jax.models import make_apply_fn

    if not isinstance(method, str) or method.lower() not in registry.available_methods():
        known = ", ".join(registry.available_methods())
        raise ValueError(f"unknown method {method!r}; available: {known}")
    options = dict(options or {})
    apply_fn = make_apply_fn(module, family)
    name = method.lower()
    if registry.is_learned(name):
        from fastxai_jax.explainers.learned import runs

        if not explainer_ckpt:
            raise ValueError(f"--method {name!r} is a learned explainer: pass --explainer-ckpt")
        if options:
            raise ValueError(f"--option: learned method {name!r} takes no options")
        trained = runs.load(
            explainer_ckpt, apply_fn=apply_fn, target_params=variables, module=module, method=name
        )
        if target_given and not trained.explainer.conditions_on_class:
            raise ValueError(
                f"--target: {name!r} explains the target's predicted class only; drop --target"
            )

        def explain_learned(x, target, key):
            del key
            if not trained.explainer.conditions_on_class:
                target = None
            return trained.explain(x, target)

        queries = trained.explainer.target_queries_per_explain
        return explain_learned, {"forward": queries, "backward": 0}
    if name == "gradcam":
        options = {"layer": DEFAULT_LAYERS.get(model), **options}
        options.update(module=module, family=family)
    cost = registry.method_cost(name, **options)

    def explain(x, target, key):
        return registry.attribute(name, apply_fn, variables, x, target, key=key, **options)

    return explain, {"forward": cost.forward, "backward": cost.backward}


def describe_methods() -> list[str]:
    """One line per method of the table: name, kind and cost per input (default options)."""
    lines = []
    for name in registry.available_methods():
        if registry.is_learned(name):
            queries = registry.get_learned(name).target_queries_per_explain
            lines.append(f"{name:<22} learned    {queries} forward, 0 backward per input")
            continue
        spec = registry.get_method(name)
        try:
            cost = registry.method_cost(name)
            text = f"{cost.forward} forward, {cost.backward} backward per input"
        except (TypeError, ValueError):  # a cost that needs options
            text = "cost depends on options"
        kind = "stochastic" if spec.needs_key else "per-input"
        lines.append(f"{name:<22} {kind:<10} {text}")
    return lines
