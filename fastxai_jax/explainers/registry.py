"""The ONE method table: every explainer by name, with no import side effects.

* Per-input methods: ``fn(apply_fn, params, x: [B, H, W, C], target: [B] int, *,
  key, **options) -> attribution``, a ``cost(**options) -> Cost`` of target
  passes per input, and whether it needs a key / differentiates the target.
* Learned methods: the config class, ``make(config, apply_fn, target_params, *,
  module=None) -> LearnedExplainer`` and the target queries one ``explain``
  spends per input; a trained one (``explainers.learned.runs.Trained``) is
  passed to :func:`attribute` as ``explainer=``.

:func:`attribute` = :func:`prepare` (validation and target resolution, once,
outside any timed region) + :func:`compute` (the raw method call). Users add
methods with :func:`register` / :func:`register_learned`.

The text half (``TOKEN_METHODS``, ``TOKEN_LEARNED_METHODS``, ``attribute_tokens``,
``token_method_cost``) lives in ``_registry_tokens`` and the record types in
``_registry_specs``; both are re-exported here, the names to use.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.core import ApplyFn, Cost, LearnedExplainer, Params, check_images, check_target
from fastxai_jax.core import resolve_target as _resolve_target
from fastxai_jax.explainers import boundary, cam, dax, gradients, mfaba, random_map, rise, tokens
from fastxai_jax.explainers import noise_tunnel as _noise
from fastxai_jax.explainers._registry_specs import (  # noqa: F401 (re-exported)
    LEARNED_METHODS,
    METHODS,
    LearnedSpec,
    MethodSpec,
    _no_cost,
    _one_pass_cost,
)
from fastxai_jax.explainers._registry_tokens import (  # noqa: F401 (re-exported)
    TOKEN_LEARNED_METHODS,
    TOKEN_METHODS,
    TokenMethodSpec,
    _check_text_method,
    _text_methods,
    attribute_tokens,
    token_method_cost,
)
from fastxai_jax.explainers.learned import fastshap, fex, ltx, tve
from fastxai_jax.explainers.learned._trained import Trained, check_num_classes


def _resolve_base(name: str) -> MethodSpec:
    """The noise tunnel's base method, looked up in this table (any per-input method)."""
    return get_method(name)


def _tunnel(kind: str | None) -> Callable[..., Any]:
    """SmoothGrad / VarGrad / the noise tunnel over any method of this table."""
    fn = functools.partial(_noise.noise_tunnel, resolve=_resolve_base)
    return fn if kind is None else functools.partial(fn, kind=kind)


_tunnel_cost = functools.partial(_noise._tunnel_cost, resolve=_resolve_base)

# The flat API's noise tunnels: any registered method as the base.
noise_tunnel = _tunnel(None)
smoothgrad = _tunnel("smoothgrad")
vargrad = _tunnel("vargrad")

METHODS |= {  # the dict lives in _registry_specs, shared with the text half
    "saliency": MethodSpec(gradients.saliency, _one_pass_cost),
    "input_x_gradient": MethodSpec(gradients.input_x_gradient, _one_pass_cost),
    "ig": MethodSpec(gradients.integrated_gradients, gradients._ig_cost),
    "integrated_gradients": MethodSpec(gradients.integrated_gradients, gradients._ig_cost),
    "gradient_shap": MethodSpec(gradients.gradient_shap, gradients._shap_cost, needs_key=True),
    "smoothgrad": MethodSpec(_tunnel("smoothgrad"), _tunnel_cost, needs_key=True),
    "vargrad": MethodSpec(_tunnel("vargrad"), _tunnel_cost, needs_key=True),
    "noise_tunnel": MethodSpec(_tunnel(None), _tunnel_cost, needs_key=True),
    "mfaba": MethodSpec(mfaba.mfaba, mfaba.mfaba_cost),
    **{
        f"mfaba_{variant}": MethodSpec(
            functools.partial(mfaba.mfaba, variant=variant),
            functools.partial(mfaba.mfaba_cost, variant),
        )
        for variant in mfaba.VARIANTS
    },
    "big": MethodSpec(boundary.big, boundary._big_cost),
    "agi": MethodSpec(boundary.agi, boundary._agi_cost, needs_key=True),
    "gradcam": MethodSpec(cam.gradcam_method, _one_pass_cost),
    "rise": MethodSpec(rise.rise, rise.rise_cost, needs_key=True, needs_grad=False),
    "random": MethodSpec(random_map.random_attribution, _no_cost, needs_key=True, needs_grad=False),
    "dax": MethodSpec(dax.dax, dax.dax_cost, needs_key=True, needs_grad=False),
}
"""Per-input methods by (lower-case) name."""

LEARNED_METHODS |= {
    "fex": LearnedSpec(fex.FexConfig, fex.make, 0),
    "ltx": LearnedSpec(ltx.LtxConfig, ltx.make, 0),
    "tve": LearnedSpec(tve.TveConfig, tve.make_for_classifier, 1),
    "fastshap": LearnedSpec(fastshap.FastShapConfig, fastshap.make, 0),
}
"""Learned methods by (lower-case) name."""


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")
    key = name.lower()
    if key in METHODS or key in LEARNED_METHODS:
        raise ValueError(f"name {name!r} is already in the method table")
    return key


def register(
    name: str,
    fn: Callable[..., Any],
    cost: Callable[..., Cost],
    *,
    needs_key: bool = False,
    needs_grad: bool = True,
) -> None:
    """Adds a user's per-input method to the table under ``name`` (lower-case)."""
    METHODS[_check_name(name)] = MethodSpec(fn, cost, needs_key, needs_grad)


def register_learned(
    name: str,
    config_cls: type,
    make: Callable[..., LearnedExplainer],
    target_queries_per_explain: int = 0,
) -> None:
    """Adds a user's learned method (its ``make`` has the table's signature)."""
    LEARNED_METHODS[_check_name(name)] = LearnedSpec(config_cls, make, target_queries_per_explain)


def available_methods(modality: str | None = None) -> list[str]:
    """Sorted names of every method, per-input and learned.

    Args:
      modality: ``None`` (every method), ``"image"`` or ``"text"`` (the methods
        of :data:`TOKEN_METHODS` / :data:`TOKEN_LEARNED_METHODS`).
    """
    if modality is None:
        return sorted({*METHODS, *LEARNED_METHODS, *TOKEN_METHODS, *TOKEN_LEARNED_METHODS})
    if modality == "image":
        return sorted([*METHODS, *LEARNED_METHODS])
    if modality == "text":
        return _text_methods()
    raise ValueError(f"modality must be None, 'image' or 'text'; got {modality!r}")


def is_learned(method: str) -> bool:
    """Whether ``method`` names a learned explainer."""
    return isinstance(method, str) and method.lower() in LEARNED_METHODS


def get_method(name: str) -> MethodSpec:
    """The per-input :class:`MethodSpec` of ``name``."""
    key = name.lower() if isinstance(name, str) else name
    if key in LEARNED_METHODS:
        raise ValueError(
            f"method {name!r} is a learned explainer: use get_learned, or pass explainer= "
            "to attribute"
        )
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return METHODS[key]


def get_learned(name: str) -> LearnedSpec:
    """The :class:`LearnedSpec` of ``name``."""
    key = name.lower() if isinstance(name, str) else name
    if key not in LEARNED_METHODS:
        raise ValueError(
            f"unknown learned method {name!r}; learned: {', '.join(sorted(LEARNED_METHODS))}"
        )
    return LEARNED_METHODS[key]


def make_learned(
    method: str, config: Any, apply_fn: ApplyFn, target_params: Params, *, module: Any = None
) -> LearnedExplainer:
    """``LEARNED_METHODS[method].make(config, apply_fn, target_params, module=module)``."""
    spec = get_learned(method)
    if not isinstance(config, spec.config_cls):
        raise ValueError(
            f"config must be a {spec.config_cls.__name__} for {method!r}; "
            f"got {type(config).__name__}"
        )
    return spec.make(config, apply_fn, target_params, module=module)


def method_cost(method: str, **options: Any) -> Cost:
    """Target-model forward/backward passes per input spent by ``method``."""
    if is_learned(method):
        return Cost(get_learned(method).target_queries_per_explain, 0)
    return get_method(method).cost(**options)


_CALL_ARGS = ("apply_fn", "params", "x", "target", "key")


def _option_names(fn: Callable[..., Any]) -> set[str] | None:
    """Option names ``fn`` accepts, or ``None`` when it takes any ``**options``."""
    if fn is cam.gradcam_method:  # forwards its **options to gradcam
        return _option_names(cam.gradcam) | {"layer", "module", "family"}
    if fn is dax.dax:  # its **options are DaxConfig fields (dax checks their values)
        names = {p for p in inspect.signature(fn).parameters if p != "options"}
        return names | set(dax.DaxConfig._fields)
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {p.name for p in params if p.kind in keyword}


def check_option_names(method: str, options: dict[str, Any]) -> None:
    """Refuses option names that ``method``'s function does not take (issue 20).

    A typo such as ``num_step=5`` would otherwise surface as a ``TypeError`` from
    inside the method, after validation (or be ignored by a ``**options``).

    Raises:
      ValueError: naming the unknown option(s) and the known ones.
    """
    spec = get_method(method)
    names = _option_names(spec.fn)
    if names is None:
        return
    names -= set(_CALL_ARGS)
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for method {method!r}; "
            f"known: {', '.join(sorted(names))}"
        )
    base = options.get("base_options")
    if isinstance(base, dict) and "base_options" in names:
        check_option_names(options.get("base", "saliency"), base)


class Prepared(NamedTuple):
    """A validated call: what :func:`compute` runs (inside a timed region).

    ``target`` is ``[B]`` int32, or ``None`` for a learned explainer asked to
    explain its own choice of class (no target query).
    """

    method: str
    x: jax.Array
    target: jax.Array | None
    key: Any
    options: dict[str, Any]
    explainer: Any = None


def _learned_target(trained: Any, x: Any, target: Any) -> jax.Array | None:
    if target is None:
        return None
    if isinstance(target, bool):
        raise ValueError(f"target must be an int class index or [B] ints; got {target!r}")
    if np.ndim(target) == 0:
        target = np.full((np.shape(x)[0],), int(target), np.int32)
    elif isinstance(target, list | tuple):
        target = np.asarray(target)
    if trained.num_classes is not None:
        check_target(target, np.shape(x)[0], trained.num_classes)
    return jnp.asarray(target, jnp.int32)


def prepare(
    method: str,
    apply_fn: ApplyFn,
    params: Params,
    x: Any,
    target: Any = None,
    *,
    key: Any = None,
    explainer: Any = None,
    **options: Any,
) -> Prepared:
    """Validates a call of ``method`` once (images, target, key, explainer) and
    resolves ``target=None`` to the predicted class for per-input methods.

    Raises:
      ValueError: naming the bad argument.
    """
    spec = None if is_learned(method) else get_method(method)  # unknown names fail first
    check_images(x, "x")
    if spec is None:
        if not isinstance(explainer, Trained):
            raise ValueError(
                f"explainer: method {method!r} is learned; pass explainer=<runs.load(...) or "
                f"runs.fit(...)[0]>; got {type(explainer).__name__}"
            )
        if explainer.method != method.lower():
            raise ValueError(f"explainer holds a {explainer.method!r} explainer, not {method!r}")
        if options:
            raise ValueError(f"learned method {method!r} takes no options; got {sorted(options)}")
        check_num_classes(explainer.num_classes, apply_fn, params, x, "apply_fn")
        target = _learned_target(explainer, x, target)
        return Prepared(method.lower(), x, target, key, {}, explainer)
    if explainer is not None:
        raise ValueError(f"explainer= is for learned methods; {method!r} is per-input")
    check_option_names(method, options)
    target = _resolve_target(apply_fn, params, x, target)
    if spec.needs_key and key is None:
        raise ValueError(f"method {method!r} is stochastic: pass key=jax.random.key(...)")
    return Prepared(method.lower(), x, target, key, options)


def compute(prepared: Prepared, apply_fn: ApplyFn, params: Params) -> Any:
    """Runs a :class:`Prepared` call (no validation: time this part)."""
    if prepared.explainer is not None:
        return prepared.explainer.explain(prepared.x, prepared.target)
    spec = METHODS[prepared.method]
    x, target = prepared.x, prepared.target
    return spec.fn(apply_fn, params, x, target, key=prepared.key, **prepared.options)


def attribute(
    method: str,
    apply_fn: ApplyFn,
    params: Params,
    x: Any,
    target: Any = None,
    *,
    key: Any = None,
    explainer: Any = None,
    **options: Any,
) -> Any:
    """Explains ``apply_fn(params, x)`` with ``method``: ``compute(prepare(...))``.

    Args:
      method: a name from :func:`available_methods` (e.g. ``"mfaba"``, ``"fex"``).
      apply_fn: ``apply_fn(params, x) -> logits [B, K]``.
      params: target parameters.
      x: ``[B, H, W, C]`` inputs.
      target: ``None`` (per-input: the predicted class; learned: the
        explainer's own choice, no target query), an int, or ``[B]`` ints.
      key: ``jax.random`` key, required by stochastic methods.
      explainer: for a learned method, the trained explainer
        (``explainers.learned.runs.Trained``); refused if built for a target
        with another class count.
      **options: per-input method options (static).

    Returns:
      The attribution, ``[B, H, W]`` unless the method's options ask otherwise.
    """
    if isinstance(apply_fn, tokens.TextFns):
        return attribute_tokens(
            method, apply_fn, params, x, target, key=key, explainer=explainer, **options
        )
    prepared = prepare(method, apply_fn, params, x, target, key=key, explainer=explainer, **options)
    return compute(prepared, apply_fn, params)
