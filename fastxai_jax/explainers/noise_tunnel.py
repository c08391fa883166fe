"""The noise tunnel over any per-input method: SmoothGrad, SmoothGrad², VarGrad.

SmoothGrad (Smilkov et al., 2017) averages a method's map over noisy copies of
the input; VarGrad (Adebayo et al., 2018) takes their variance. The base method
is looked up by name: in the method table (``registry`` passes ``resolve``), or
among the gradient methods of :mod:`fastxai_jax.explainers.gradients`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fastxai_jax.core import ApplyFn, Cost, Params
from fastxai_jax.explainers import _common
from fastxai_jax.explainers.gradients import (
    _ig_cost,
    _one_pass_cost,
    input_x_gradient,
    integrated_gradients,
    saliency,
)

NOISE_TUNNEL_KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


@functools.partial(
    jax.jit,
    static_argnames=(
        "apply_fn",
        "base",
        "base_options",
        "kind",
        "num_samples",
        "batch_size",
        "per_channel",
    ),
)
def _noise_tunnel(
    apply_fn,
    params,
    x,
    target,
    key,
    base,
    base_options,
    kind,
    num_samples,
    sigma,
    batch_size,
    per_channel,
):
    base_fn = base
    keys = jax.random.split(key, num_samples)

    def one_sample(sample_key):
        k_noise, k_base = jax.random.split(sample_key)
        noisy = x + sigma * jax.random.normal(k_noise, x.shape, x.dtype)
        out = base_fn(
            apply_fn,
            params,
            noisy,
            target,
            key=k_base,
            per_channel=per_channel,
            **dict(base_options),
        )
        return jnp.stack([out, jnp.square(out)])

    weights = jnp.full((num_samples,), 1.0 / num_samples, x.dtype)
    mean, mean_sq = _common.chunked_weighted_sum(one_sample, keys, weights, batch_size)
    if kind == "smoothgrad":
        return mean
    if kind == "smoothgrad_sq":
        return mean_sq
    return mean_sq - jnp.square(mean)


def noise_tunnel(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    target: jax.Array,
    *,
    key: jax.Array,
    base: str = "saliency",
    kind: str = "smoothgrad",
    num_samples: int = 50,
    sigma: float = 0.15,
    batch_size: int | None = 16,
    per_channel: bool = False,
    base_options: dict[str, Any] | None = None,
    resolve: Callable[[str], Any] | None = None,
) -> jax.Array:
    """Noise tunnel over any registered method: SmoothGrad, SmoothGrad², VarGrad.

    SmoothGrad (Smilkov et al., 2017) averages ``base(x + σ·ε)`` over samples;
    VarGrad (Adebayo et al., 2018) takes their variance; SmoothGrad² the mean of
    squares. The statistic is taken over the base method's output (its channel
    sum unless ``per_channel``).

    Args:
      apply_fn, params, x, target: as :func:`~fastxai_jax.explainers.gradients.saliency`.
      key: ``jax.random`` key (required).
      base: a registered method name (default ``"saliency"``, i.e. ``|grad|``).
      kind: one of :data:`NOISE_TUNNEL_KINDS`.
      num_samples: noisy copies per input (MFABA paper: 50).
      sigma: noise std in input units ([0, 1] images; MFABA paper: 0.15).
      batch_size: noisy copies evaluated at once (memory bound).
      per_channel: ask the base method for ``[B, H, W, C]``.
      base_options: options for the base method (hashable values).
      resolve: ``resolve(name) -> spec`` with ``spec.fn`` (the method table's
        ``get_method``, which ``fx.smoothgrad`` and the table pass); ``None``
        resolves only the gradient methods of :mod:`~fastxai_jax.explainers.gradients`.

    Returns:
      ``[B, H, W]`` (or ``[B, H, W, C]``).
    """

    _common.validate(apply_fn, params, x, target, num_samples=num_samples)
    target = jnp.asarray(target, jnp.int32)
    _common.check_choice("kind", kind, NOISE_TUNNEL_KINDS)
    if key is None:
        raise ValueError("key is required for the noise tunnel (stochastic)")
    if batch_size is not None:
        _common.validate_positive("batch_size", batch_size)
    base_fn = (resolve or _local_method)(base).fn  # raises ValueError naming unknown methods
    options = tuple(sorted((base_options or {}).items()))
    return _noise_tunnel(
        apply_fn,
        params,
        x,
        target,
        key,
        base_fn,
        options,
        kind,
        num_samples,
        float(sigma),
        batch_size,
        bool(per_channel),
    )


smoothgrad = functools.partial(noise_tunnel, kind="smoothgrad")
vargrad = functools.partial(noise_tunnel, kind="vargrad")


def _tunnel_cost(
    base: str = "saliency",
    num_samples: int = 50,
    base_options=None,
    resolve: Callable[[str], Any] | None = None,
    **_: Any,
) -> Cost:
    per = (resolve or _local_method)(base).cost(**(base_options or {}))
    return Cost(per.forward * num_samples, per.backward * num_samples)


class _LocalSpec(NamedTuple):
    fn: Callable[..., Any]
    cost: Callable[..., Cost]


def _local_method(name: str) -> _LocalSpec:
    """The gradient methods by table name (the noise tunnel's default bases)."""
    local = {
        "saliency": _LocalSpec(saliency, _one_pass_cost),
        "input_x_gradient": _LocalSpec(input_x_gradient, _one_pass_cost),
        "ig": _LocalSpec(integrated_gradients, _ig_cost),
        "integrated_gradients": _LocalSpec(integrated_gradients, _ig_cost),
    }
    if name not in local:
        raise ValueError(
            f"base must name a method; got {name!r} (without resolve=, one of {sorted(local)})"
        )
    return local[name]
