"""Gradient baselines: Saliency, Input×Gradient, Integrated Gradients, GradientSHAP.

All methods take ``apply_fn(params, x) -> logits``, ``x: [B, H, W, C]`` and
``target: [B]`` ints, differentiate the target class's *logit* by default
(``score="probability"`` or ``"log_probability"`` on request) and return
``[B, H, W]`` (channel sum) or ``[B, H, W, C]`` with ``per_channel=True``.
Multi-point methods sum their gradients chunk by chunk (``batch_size`` points at
once, a ``lax.scan`` over chunks), so memory does not grow with the step count.
The noise tunnel (SmoothGrad / VarGrad) is :mod:`fastxai_jax.explainers.noise_tunnel`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.core import ApplyFn, Cost, Params
from fastxai_jax.explainers import _common

IG_METHODS = (
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "gauss_legendre",
    "captum_trapezoid",
)


# --------------------------------------------------------------------- saliency


@functools.partial(jax.jit, static_argnames=("apply_fn", "score", "absolute", "per_channel"))
def _saliency(apply_fn, params, x, target, score, absolute, per_channel):
    grad = _common.score_grad(apply_fn, params, x, target, score)
    grad = jnp.abs(grad) if absolute else grad
    return _common.reduce_channels(grad, per_channel)


def saliency(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    target: jax.Array,
    *,
    key: Any = None,
    absolute: bool = True,
    score: str = "logit",
    per_channel: bool = False,
) -> jax.Array:
    """Vanilla gradient (Simonyan et al., 2014): ``|∂ f_target / ∂x|``.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits [B, K]``.
      params: target parameters.
      x: ``[B, H, W, C]`` inputs.
      target: ``[B]`` int classes.
      key: unused.
      absolute: take ``|grad|`` (Simonyan/Captum default); ``False`` keeps the sign.
      score: ``"logit"``, ``"probability"`` or ``"log_probability"``.
      per_channel: return ``[B, H, W, C]`` instead of the channel sum.

    Returns:
      ``[B, H, W]`` (sum over channels of the per-channel values) or ``[B, H, W, C]``.
    """
    del key
    _common.validate(apply_fn, params, x, target)
    target = jnp.asarray(target, jnp.int32)
    _common.check_choice("score", score, _common.SCORES)
    return _saliency(apply_fn, params, x, target, score, bool(absolute), bool(per_channel))


@functools.partial(jax.jit, static_argnames=("apply_fn", "score", "per_channel"))
def _input_x_gradient(apply_fn, params, x, target, score, per_channel):
    grad = _common.score_grad(apply_fn, params, x, target, score)
    return _common.reduce_channels(x * grad, per_channel)


def input_x_gradient(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    target: jax.Array,
    *,
    key: Any = None,
    score: str = "logit",
    per_channel: bool = False,
) -> jax.Array:
    """Input×Gradient (Shrikumar et al., 2016): ``x ⊙ ∂ f_target / ∂x`` (signed).

    Args and returns as :func:`saliency` (no ``absolute``).
    """
    del key
    _common.validate(apply_fn, params, x, target)
    target = jnp.asarray(target, jnp.int32)
    _common.check_choice("score", score, _common.SCORES)
    return _input_x_gradient(apply_fn, params, x, target, score, bool(per_channel))


# ---------------------------------------------------------- integrated gradients


def ig_alphas_and_weights(num_steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation points ``α ∈ [0, 1]`` and quadrature weights (summing to 1,
    except Captum's ``"captum_trapezoid"``).

    Args:
      num_steps: number of gradient evaluations.
      method: one of :data:`IG_METHODS`.

    Returns:
      ``(alphas [num_steps], weights [num_steps])`` float32 numpy arrays.
    """
    n = num_steps
    if method == "riemann_left":
        alphas, weights = np.arange(n) / n, np.full(n, 1.0 / n)
    elif method == "riemann_right":
        alphas, weights = np.arange(1, n + 1) / n, np.full(n, 1.0 / n)
    elif method == "riemann_middle":
        alphas, weights = (np.arange(n) + 0.5) / n, np.full(n, 1.0 / n)
    elif method == "riemann_trapezoid":
        if n == 1:
            alphas, weights = np.array([0.5]), np.array([1.0])
        else:
            alphas = np.linspace(0.0, 1.0, n)
            weights = np.full(n, 1.0 / (n - 1))
            weights[0] = weights[-1] = 0.5 / (n - 1)
    elif method == "captum_trapezoid":
        # Captum's "riemann_trapezoid" (the MFABA authors' IG and BIG): nodes
        # linspace(0, 1, n) but steps 1/n with halved ends, so the weights sum to
        # (n − 1)/n and the map is scaled by that factor.
        if n < 2:
            raise ValueError(f"num_steps must be >= 2 for captum_trapezoid; got {n}")
        alphas = np.linspace(0.0, 1.0, n)
        weights = np.full(n, 1.0 / n)
        weights[0] = weights[-1] = 0.5 / n
    elif method == "gauss_legendre":
        nodes, gl_weights = np.polynomial.legendre.leggauss(n)
        alphas, weights = (nodes + 1.0) / 2.0, gl_weights / 2.0
    else:
        raise ValueError(f"method must be one of {IG_METHODS}; got {method!r}")
    return alphas.astype(np.float32), weights.astype(np.float32)


def _path_integral(apply_fn, params, x, baseline, target, score, num_steps, method, batch_size):
    """``(x − x') ⊙ Σ_i w_i ∇ s(x' + α_i (x − x'))``, ``[B, H, W, C]``, with
    ``(α, w) = ig_alphas_and_weights(num_steps, method)`` (IG and BIG)."""
    alphas, weights = (jnp.asarray(v) for v in ig_alphas_and_weights(num_steps, method))
    delta = x - baseline

    def grad_at(alpha):
        return _common.score_grad(apply_fn, params, baseline + alpha * delta, target, score)

    avg_grad = _common.chunked_weighted_sum(grad_at, alphas, weights, batch_size)
    return delta * avg_grad


@functools.partial(
    jax.jit,
    static_argnames=("apply_fn", "num_steps", "method", "score", "batch_size", "per_channel"),
)
def _integrated_gradients(
    apply_fn, params, x, baseline, target, num_steps, method, score, batch_size, per_channel
):
    attribution = _path_integral(
        apply_fn, params, x, baseline, target, score, num_steps, method, batch_size
    )
    return _common.reduce_channels(attribution, per_channel)


@functools.partial(jax.jit, static_argnames=("apply_fn", "score"))
def _ig_chunk(apply_fn, params, x, baseline, target, alphas, weights, score):
    """``Σ_i w_i ∇ s(x' + α_i (x − x'))`` over one chunk of path points."""
    delta = x - baseline

    def grad_at(alpha):
        return _common.score_grad(apply_fn, params, baseline + alpha * delta, target, score)

    return _common.weighted_vmap_sum(grad_at, alphas, weights)


@functools.partial(jax.jit, static_argnames=("per_channel",))
def _ig_finish(x, baseline, avg_grad, per_channel):
    return _common.reduce_channels((x - baseline) * avg_grad, per_channel)


def _integrated_gradients_host(
    apply_fn, params, x, baseline, target, num_steps, method, score, batch_size, per_channel
):
    """:func:`_integrated_gradients` with the chunk loop on the host (same sums, same order)."""
    alphas, weights = ig_alphas_and_weights(num_steps, method)
    chunk_sum = functools.partial(_ig_chunk, apply_fn, params, x, baseline, target, score=score)
    avg_grad = _common.host_chunked_weighted_sum(
        chunk_sum, jnp.asarray(alphas), jnp.asarray(weights), batch_size
    )
    return _ig_finish(x, baseline, avg_grad, per_channel)


def _resolve_baseline(x: Any, baseline: Any, name: str = "baseline") -> jax.Array:
    """``None`` → black (zeros); a scalar or an array broadcastable to ``x``."""
    if baseline is None:
        return jnp.zeros_like(x)
    arr = jnp.asarray(baseline, jnp.result_type(x))
    try:
        return jnp.broadcast_to(arr.reshape((1,) * (x.ndim - arr.ndim) + arr.shape), x.shape)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{name} must broadcast to x's shape {tuple(x.shape)}; got {tuple(arr.shape)}"
        ) from err


def integrated_gradients(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    target: jax.Array,
    *,
    key: Any = None,
    baseline: Any = None,
    num_steps: int = 50,
    method: str = "gauss_legendre",
    score: str = "logit",
    batch_size: int | None = 16,
    per_channel: bool = False,
    loop: str = "auto",
) -> jax.Array:
    """Integrated Gradients (Sundararajan et al., 2017).

    ``A = (x − x') ⊙ ∫₀¹ ∇ s(x' + α (x − x')) dα`` with the integral approximated
    by a Riemann rule or Gauss–Legendre quadrature (Captum's default).

    Args:
      apply_fn, params, x, target, key: as :func:`saliency`.
      baseline: ``None`` (black, zeros), a scalar, or an array broadcastable to ``x``.
      num_steps: gradient evaluations along the path.
      method: one of :data:`IG_METHODS`.
      score: class score differentiated (``"logit"`` by default).
      batch_size: path points evaluated at once (memory bound); ``None`` = all.
      per_channel: return ``[B, H, W, C]`` instead of the channel sum.
      loop: how the chunks are iterated: ``"scan"`` (one compiled ``lax.scan``),
        ``"host"`` (one compiled chunk called from Python; same sums in the same
        order) or ``"auto"`` (host on CPU outside ``jit``/``vmap``, where XLA runs
        a large network inside a loop body 1.4–1.6× slower; scan elsewhere).

    Returns:
      ``[B, H, W]`` signed attribution (or ``[B, H, W, C]``).
    """
    del key
    _common.validate(apply_fn, params, x, target, num_steps=num_steps)
    target = jnp.asarray(target, jnp.int32)
    _common.check_choice("method", method, IG_METHODS)
    _common.check_choice("score", score, _common.SCORES)
    if batch_size is not None:
        _common.validate_positive("batch_size", batch_size)
    base = _resolve_baseline(x, baseline)
    run = (
        _integrated_gradients_host
        if _common.resolve_loop(loop, params, x, target, base) == "host"
        else _integrated_gradients
    )
    return run(
        apply_fn, params, x, base, target, num_steps, method, score, batch_size, bool(per_channel)
    )


def integrated_gradients_with_delta(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    target: jax.Array,
    **options: Any,
) -> tuple[jax.Array, jax.Array]:
    """Integrated Gradients plus the completeness error per input.

    Args:
      apply_fn, params, x, target, **options: as :func:`integrated_gradients`.

    Returns:
      ``(attribution, delta)`` with ``delta [B] = Σ A − (s(x) − s(x'))``; two extra
      forward passes.
    """
    attribution = integrated_gradients(apply_fn, params, x, target, **options)
    target = jnp.asarray(target, jnp.int32)
    base = _resolve_baseline(x, options.get("baseline"))
    score = options.get("score", "logit")
    s_x = _common.class_score(apply_fn(params, x), target, score)
    s_base = _common.class_score(apply_fn(params, base), target, score)
    total = jnp.sum(attribution.reshape(attribution.shape[0], -1), axis=-1)
    return attribution, total - (s_x - s_base)


# --------------------------------------------------------------- gradient SHAP


@functools.partial(
    jax.jit, static_argnames=("apply_fn", "num_samples", "score", "batch_size", "per_channel")
)
def _gradient_shap(
    apply_fn, params, x, baselines, target, key, num_samples, sigma, score, batch_size, per_channel
):
    batch = x.shape[0]
    keys = jax.random.split(key, num_samples)

    def one_sample(sample_key):
        k_noise, k_alpha, k_base = jax.random.split(sample_key, 3)
        noisy = x + sigma * jax.random.normal(k_noise, x.shape, x.dtype)
        alpha = jax.random.uniform(k_alpha, (batch, 1, 1, 1), x.dtype)
        pick = jax.random.randint(k_base, (batch,), 0, baselines.shape[0])
        base = baselines[pick]
        grad = _common.score_grad(apply_fn, params, base + alpha * (noisy - base), target, score)
        return grad * (noisy - base)

    weights = jnp.full((num_samples,), 1.0 / num_samples, x.dtype)
    attribution = _common.chunked_weighted_sum(one_sample, keys, weights, batch_size)
    return _common.reduce_channels(attribution, per_channel)


def gradient_shap(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    target: jax.Array,
    *,
    key: jax.Array,
    baselines: Any = None,
    num_samples: int = 50,
    sigma: float = 0.09,
    score: str = "logit",
    batch_size: int | None = 16,
    per_channel: bool = False,
) -> jax.Array:
    """GradientSHAP (Lundberg & Lee, 2017; Captum's estimator).

    Each sample draws a baseline ``x'`` from ``baselines``, Gaussian noise
    ``x̃ = x + σ·ε`` and ``α ~ U(0, 1)``; the attribution is the mean of
    ``∇ s(x' + α (x̃ − x')) ⊙ (x̃ − x')``.

    Args:
      apply_fn, params, x, target: as :func:`saliency`.
      key: ``jax.random`` key (required).
      baselines: ``[N, H, W, C]`` baseline distribution; ``None`` = one black image.
      num_samples: samples per input (FEX notebooks: 50).
      sigma: noise std in input units (FEX notebooks: 0.09).
      score: class score differentiated.
      batch_size: samples evaluated at once.
      per_channel: return ``[B, H, W, C]``.

    Returns:
      ``[B, H, W]`` signed attribution (or ``[B, H, W, C]``).
    """
    _common.validate(apply_fn, params, x, target, num_samples=num_samples)
    target = jnp.asarray(target, jnp.int32)
    _common.check_choice("score", score, _common.SCORES)
    if key is None:
        raise ValueError("key is required for gradient_shap (stochastic)")
    if batch_size is not None:
        _common.validate_positive("batch_size", batch_size)
    if baselines is None:
        baselines = jnp.zeros((1,) + tuple(x.shape[1:]), x.dtype)
    baselines = jnp.asarray(baselines, x.dtype)
    if baselines.ndim != 4 or tuple(baselines.shape[1:]) != tuple(x.shape[1:]):
        raise ValueError(
            f"baselines must have shape [N, {', '.join(map(str, x.shape[1:]))}]; "
            f"got {tuple(baselines.shape)}"
        )
    return _gradient_shap(
        apply_fn,
        params,
        x,
        baselines,
        target,
        key,
        num_samples,
        float(sigma),
        score,
        batch_size,
        bool(per_channel),
    )


# -------------------------------------------------------------------- registry


def _one_pass_cost(**_: Any) -> Cost:
    return Cost(1, 1)


def _ig_cost(num_steps: int = 50, **_: Any) -> Cost:
    return Cost(num_steps, num_steps)


def _shap_cost(num_samples: int = 50, **_: Any) -> Cost:
    return Cost(num_samples, num_samples)
