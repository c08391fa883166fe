"""Name → method table shared by :func:`fastxai_jax.attribute` and the CLI.

A registered per-input method has the signature
``fn(apply_fn, params, x: [B, H, W, C], target: [B] int, *, key, **options)
-> attribution`` and a ``cost(**options) -> Cost`` giving target-model passes
per input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from fastxai_jax.core import ApplyFn, Cost, Params, check_images, resolve_target


class MethodSpec(NamedTuple):
    """A registered attribution method.

    Attributes:
      fn: the batched method (see module docstring).
      cost: ``cost(**options) -> Cost`` per input.
      needs_key: whether the method is stochastic and needs a PRNG key.
      needs_grad: whether the method differentiates the target.
    """

    fn: Callable[..., Any]
    cost: Callable[..., Cost]
    needs_key: bool = False
    needs_grad: bool = True


_REGISTRY: dict[str, MethodSpec] = {}


def register(
    name: str,
    fn: Callable[..., Any],
    cost: Callable[..., Cost],
    *,
    needs_key: bool = False,
    needs_grad: bool = True,
) -> None:
    """Adds a method to the table under ``name`` (lower-case)."""
    _REGISTRY[name.lower()] = MethodSpec(fn, cost, needs_key, needs_grad)


def _load_builtin() -> None:
    # Importing the explainer modules registers their methods.
    import importlib

    for module in (
        "gradients",
        "mfaba",
        "boundary",
        "cam",
        "rise",
        "random_map",
        "dax",
    ):
        try:
            importlib.import_module(f"fastxai_jax.explainers.{module}")
        except ModuleNotFoundError as err:  # a module not written yet
            if err.name != f"fastxai_jax.explainers.{module}":
                raise


def get_method(name: str) -> MethodSpec:
    """Returns the :class:`MethodSpec` registered under ``name``."""
    _load_builtin()
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return _REGISTRY[key]


def available_methods() -> list[str]:
    """Sorted names of all registered methods."""
    _load_builtin()
    return sorted(_REGISTRY)


def attribute(
    method: str,
    apply_fn: ApplyFn,
    params: Params,
    x: Any,
    target: Any = None,
    *,
    key: Any = None,
    **options: Any,
) -> Any:
    """Explains ``apply_fn(params, x)`` with the method registered as ``method``.

    Args:
      method: a name from :func:`available_methods` (e.g. ``"mfaba"``, ``"ig"``).
      apply_fn: ``apply_fn(params, x) -> logits [B, K]``.
      params: target parameters.
      x: ``[B, H, W, C]`` inputs.
      target: ``None`` (explain the predicted class), an int, or ``[B]`` ints.
      key: ``jax.random`` key, required by stochastic methods.
      **options: method options (static).

    Returns:
      The attribution, ``[B, H, W]`` unless the method's options ask otherwise.
    """
    spec = get_method(method)
    check_images(x, "x")
    target = resolve_target(apply_fn, params, x, target)
    if spec.needs_key and key is None:
        raise ValueError(f"method {method!r} is stochastic: pass key=jax.random.key(...)")
    return spec.fn(apply_fn, params, x, target, key=key, **options)


def method_cost(method: str, **options: Any) -> Cost:
    """Target-model forward/backward passes per input spent by ``method``."""
    return get_method(method).cost(**options)
