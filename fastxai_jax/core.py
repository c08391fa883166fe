"""The one contract every explainer shares (SPEC §0).

* A target model is a pure function ``apply_fn(params, x) -> logits`` over a
  batch ``x: [B, H, W, C]`` (images in [0, 1], NHWC unless a model says
  otherwise) returning ``logits: [B, num_classes]``.
* A per-input method is ``method(apply_fn, params, x, target, *, key=None,
  **options) -> attribution``; batched ``x: [B, ...]``, ``target: [B]`` int.
* A learned explainer is a :class:`LearnedExplainer` NamedTuple of pure
  functions: ``init_params(key, sample_batch) -> params``, ``loss_fn(params,
  batch, key) -> (loss, metrics)`` and ``explain(params, x, target=None) ->
  [B, H, W]``; one shared ``make_update`` trains every method.
* An attribution has the input's spatial shape ``[B, H, W]`` unless per-channel
  ``[B, H, W, C]`` or patch-grid ``[B, gh, gw]`` output is asked for.
* Every method reports its target-model cost per input as a :class:`Cost`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Params = PyTree
ApplyFn = Callable[[Params, jax.Array], jax.Array]
"""``apply_fn(params, x: [B, ...]) -> logits: [B, num_classes]``."""


class Cost(NamedTuple):
    """Target-model passes spent per input (forward and backward)."""

    forward: int
    backward: int

    def __add__(self, other: Cost) -> Cost:  # type: ignore[override]
        return Cost(self.forward + other.forward, self.backward + other.backward)


class InitParamsFn(Protocol):
    """``init_params(key, sample_batch) -> params`` of a learned explainer."""

    def __call__(self, key: jax.Array, sample_batch: Any) -> Params: ...


class LossFn(Protocol):
    """``loss_fn(params, batch, key) -> (loss, metrics)``: the only method-specific
    part of training (``batch``: images ``[B, H, W, C]`` or a dict with ``"images"``)."""

    def __call__(self, params: Params, batch: Any, key: jax.Array) -> tuple[jax.Array, Any]: ...


class ExplainFn(Protocol):
    """``explain(params, x, target=None) -> [B, H, W]`` (``explain_grid``: the
    explainer's own grid, ``[B, gh, gw]``)."""

    def __call__(self, params: Params, x: jax.Array, target: Any = None) -> jax.Array: ...


class LearnedExplainer(NamedTuple):
    """An amortised explainer as a NamedTuple of pure functions (optax's
    ``GradientTransformation`` is the model); train it with
    ``explainers.learned.make_update`` / ``runs.fit``.

    Attributes:
      config: the method's (frozen dataclass) config; no optimizer settings.
      init_params: ``init_params(key, sample_batch) -> params`` (validates the batch).
      loss_fn: ``loss_fn(params, batch, key) -> (loss, metrics)``; pure, jit-able.
      explain: ``explain(params, x, target=None) -> [B, H, W]``; ``target=None``
        explains the method's own choice of class (see each method).
      num_classes: the target's class count the explainer was built for (``None``
        if the method does not know it before training).
      target_queries_per_explain: target (or encoder) forwards one ``explain``
        call spends per input; 0 for a pure explainer forward.
      explain_grid: optional ``explain_grid(params, x, target=None) -> [B, gh, gw]``.
      frozen: optional ``frozen(params) -> pytree of bool`` marking leaves that
        get zero updates (a structural choice of the method, not an optimizer
        setting); applied by ``make_update``'s callers through ``freeze``.
      conditions_on_class: whether ``explain`` takes a ``target`` class; a
        method that cannot (LTX) refuses any ``target`` but ``None``.
    """

    config: Any
    init_params: InitParamsFn
    loss_fn: LossFn
    explain: ExplainFn
    num_classes: int | None = None
    target_queries_per_explain: int = 0
    explain_grid: ExplainFn | None = None
    frozen: Callable[[Params], Any] | None = None
    conditions_on_class: bool = True


def learned_explainer(
    config: Any, init_params: InitParamsFn, loss_fn: LossFn, explain: ExplainFn, **fields: Any
) -> LearnedExplainer:
    """A :class:`LearnedExplainer` for ``config.num_classes`` classes that queries no
    target in ``explain`` unless ``fields`` say otherwise (the optional attributes)."""
    fields.setdefault("num_classes", config.num_classes)
    return LearnedExplainer(config, init_params, loss_fn, explain, **fields)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


_IMAGE_CONTRACT = contextvars.ContextVar("fastxai_image_contract", default=True)


@contextlib.contextmanager
def non_image_inputs():
    """Within this block :func:`check_images` checks rank, dtype and finiteness only.

    For image methods reused on lifted token embeddings ``[B, T, 1, D]``
    (``explainers.tokens``), which are neither RGB nor in [0, 1].
    """
    token = _IMAGE_CONTRACT.set(False)
    try:
        yield
    finally:
        _IMAGE_CONTRACT.reset(token)


def check_images(
    x: Any,
    name: str = "x",
    *,
    rank: int = 4,
    channels: int | None = 3,
    check_finite: bool = True,
    unit_range: bool = True,
) -> None:
    """Validates a batch of images ``x: [B, H, W, C]`` in [0, 1] at the boundary.

    Raises ``ValueError`` naming ``name`` when ``x`` is not a floating array of
    the given rank, is an empty batch, has other than ``channels`` channels
    (RGB: a 1- or 4-channel image would be broadcast or fail in the model's
    normalisation), or (for concrete arrays) holds NaN/Inf or values outside
    [0, 1]. uint8 images are refused: convert them with :func:`images_from_uint8`.
    """
    shape = _shape(x)
    if len(shape) != rank:
        raise ValueError(f"{name} must have rank {rank} ([B, H, W, C]); got shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {shape})")
    contract = _IMAGE_CONTRACT.get()
    if contract and channels is not None and shape[-1] != channels:
        raise ValueError(
            f"{name} must have {channels} channels (RGB, channels last); got shape {shape}"
        )
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        hint = (
            " (convert uint8 images with fastxai_jax.images_from_uint8)"
            if dtype == np.uint8
            else ""
        )
        raise ValueError(f"{name} must be a floating array in [0, 1]; got dtype {dtype}{hint}")
    if isinstance(x, jax.core.Tracer):
        return
    if check_finite and not bool(np.all(np.isfinite(np.asarray(x)))):
        raise ValueError(f"{name} contains NaN or Inf values")
    if contract and unit_range:
        check_range(x, name)


def check_range(x: Any, name: str = "x", low: float = 0.0, high: float = 1.0) -> None:
    """Raises ``ValueError`` if concrete ``x`` has values outside ``[low, high]`` (or NaN)."""
    if isinstance(x, jax.core.Tracer):
        return
    arr = np.asarray(x)
    if arr.size == 0:
        return
    if not bool(np.all(np.isfinite(arr))):
        raise ValueError(f"{name} contains NaN or Inf values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < low - 1e-6 or hi > high + 1e-6:
        hint = ""
        if (low, high) == (0.0, 1.0):
            hint = (
                " (images in [0, 255]: convert with fastxai_jax.images_from_uint8 or divide by "
                "255; images in [-0.5, 0.5] or normalised: pass the [0, 1] image, the model "
                "normalises)"
            )
        raise ValueError(
            f"{name} must lie in [{low}, {high}]; got values in [{lo:.4g}, {hi:.4g}]{hint}"
        )


def images_from_uint8(images: Any, name: str = "images") -> jax.Array:
    """Converts uint8 images in ``[0, 255]`` to float32 in ``[0, 1]`` (``x / 255``).

    The one explicit way to feed 8-bit images to the library: every public
    function refuses float images outside [0, 1] and integer images.

    Args:
      images: ``[..., H, W, C]`` array of dtype ``uint8``.
      name: argument name used in errors.

    Returns:
      float32 array of the same shape in ``[0, 1]``.
    """
    dtype = np.result_type(images)
    if dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8 (values 0..255); got {dtype}")
    return jnp.asarray(np.asarray(images, np.float32) / np.float32(255.0))


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raises ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")


def check_target(target: Any, batch_size: int, num_classes: int, name: str = "target") -> None:
    """Validates integer class indices ``target: [B]`` (concrete values only)."""
    if isinstance(target, bool | np.bool_):
        raise ValueError(f"{name} must hold integer class indices; got the bool {target!r}")
    shape = _shape(target)
    if shape != (batch_size,):
        raise ValueError(f"{name} must have shape ({batch_size},); got {shape}")
    dtype = jnp.result_type(target)
    if dtype == jnp.bool_ or not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"{name} must hold integer class indices; got {jnp.result_type(target)}")
    if not isinstance(target, jax.core.Tracer):
        arr = np.asarray(target)
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"{name} holds class indices outside [0, {num_classes}): "
                f"min {arr.min()}, max {arr.max()}"
            )


def resolve_target(
    apply_fn: ApplyFn, params: Params, x: jax.Array, target: Any = None
) -> jax.Array:
    """Returns the class to explain per input: ``target`` if given, else ``argmax f(x)``.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits [B, K]``.
      params: the target model's parameters.
      x: ``[B, ...]`` inputs.
      target: ``None`` (predicted class), an int (same class for all), or ``[B]`` ints.

    Returns:
      ``[B]`` int32 class indices.
    """
    batch_size = _shape(x)[0]
    if isinstance(target, bool | np.bool_):
        raise ValueError(f"target must be an int class index or [B] ints; got the bool {target!r}")
    if target is None:
        return jnp.argmax(apply_fn(params, x), axis=-1).astype(jnp.int32)
    if isinstance(target, int | np.integer):
        target = jnp.full((batch_size,), int(target), jnp.int32)
    elif isinstance(target, list | tuple):
        target = np.asarray(target)
    elif isinstance(target, float | str | bytes):
        raise ValueError(f"target must be an int class index or [B] ints; got {target!r}")
    logits_shape = jax.eval_shape(apply_fn, params, x).shape
    if len(logits_shape) != 2 or logits_shape[0] != batch_size:
        raise ValueError(
            f"apply_fn must return logits of shape ({batch_size}, num_classes); got {logits_shape}"
        )
    check_target(target, batch_size, logits_shape[-1])
    return jnp.asarray(target, jnp.int32)


# --- Substrate: what a removed pixel becomes (one vocabulary, fastxai_jax/substrate.py) ---
from fastxai_jax.substrate import Substrate, as_substrate, to_fill  # noqa: E402,F401
