"""Perturbation metrics (SPEC §7): insertion/deletion, POS/NEG, ADP/PIC.

Every curve is one jitted computation. Features are ranked once; the image
at step ``t`` is ``where(rank < k_t, a, b)``; the steps are evaluated in
chunks of ``chunk_size`` steps per forward pass with ``lax.map`` (memory is
bounded by ``chunk_size × B`` images), so the cost is the target's forward
passes and nothing else.

Protocols:

* **Insertion / deletion** (Petsiuk et al., RISE, BMVC 2018): deletion
  replaces the top-``k_t`` features of ``x`` with the substrate, insertion
  restores them onto the substrate; the score is the softmax probability of
  the target (or top-1 agreement); the AUC is RISE's normalised trapezoid
  ``(Σ − first/2 − last/2)/(n − 1)``. RISE itself: pixels, 224 a step on
  224² (``step_size=224``), insertion on ``"blur"``, deletion on
  ``"zeros_normalised"``. MFABA: the same on ``"zeros"`` for both, and its
  code ranks each channel separately (``per_channel=True`` with a
  ``[B, H, W, C]`` attribution). FEX: ``granularity="grid"`` (or ``"patch"``),
  10 steps, ``"zeros_normalised"``; FEX reports the *mean* of the curve.
* **POS / NEG** (Chefer et al. CVPR 2021; LTX, ICDM 2023): zero (in
  ``[0, 1]``) the top (POS) or bottom (NEG) ``int(F·p)`` pixels for
  ``p = 0.1 … 0.9``; score top-1 agreement with the target (ŷ by default).
  The curve has 10 points, the first the unperturbed input (``p = 0``), and
  the AUC is LTX's: the trapezoid over ``p = 0, 0.1, …, 0.9`` (width 0.9,
  so at most 90) times 100. Averaging the per-input AUCs gives the paper's
  figure (the AUC is linear in the curve). Lower POS, higher NEG are better.
* **ADP / PIC** (Chattopadhay et al., Grad-CAM++; LTX's CNN evaluation): with
  ``p`` the target probability on ``x`` and ``p_m`` on ``x ⊙ s`` (``s`` the
  map, min-max normalised to ``[0, 1]`` per input): per input
  ``adp = 100·max(p − p_m, 0)/p`` and ``pic = 100·[p_m > p]``; their means over
  a dataset are ADP (lower is better) and PIC (higher is better).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.core import (
    ApplyFn,
    Params,
    check_choice,
    check_images,
    check_range,
    resolve_target,
)
from fastxai_jax.metrics import _curves, _ranking
from fastxai_jax.models import maps

POS_NEG_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class CurveResult(NamedTuple):
    """A perturbation curve per input.

    Attributes:
      curve: ``[B, T + 1]`` scores after perturbing ``k_t`` features.
      auc: ``[B]`` area under the curve (the protocol's AUC formula).
      fractions: ``[T + 1]`` fraction ``k_t / F`` of features perturbed.
    """

    curve: jax.Array
    auc: jax.Array
    fractions: np.ndarray


class AdpPicResult(NamedTuple):
    """ADP/PIC per input (dataset ADP/PIC = mean over inputs).

    Attributes:
      adp: ``[B]`` ``100·max(p − p_masked, 0)/p`` (lower is better).
      pic: ``[B]`` ``100·[p_masked > p]`` (higher is better).
      prob: ``[B]`` target probability on ``x``.
      masked_prob: ``[B]`` target probability on ``x ⊙ map``.
    """

    adp: jax.Array
    pic: jax.Array
    prob: jax.Array
    masked_prob: jax.Array


def normalised_auc(curve: jax.Array) -> jax.Array:
    """RISE's normalised trapezoid ``(Σ − first/2 − last/2)/(n − 1)`` over the last axis.

    Args:
      curve: ``[..., n]`` equally spaced samples, ``n ≥ 2``.

    Returns:
      ``[...]``: the trapezoid integral over ``[0, 1]``.
    """
    curve = jnp.asarray(curve)
    num_points = curve.shape[-1]
    if num_points < 2:
        raise ValueError(f"curve needs at least 2 points on its last axis; got shape {curve.shape}")
    total = jnp.sum(curve, axis=-1) - curve[..., 0] / 2 - curve[..., -1] / 2
    return total / (num_points - 1)


# ----------------------------------------------------------------------------- public metrics


def insertion_deletion(
    apply_fn: ApplyFn,
    params: Params,
    x: Any,
    attribution: Any,
    target: Any = None,
    *,
    granularity: str = "pixel",
    patch_size: int | None = None,
    num_steps: int | None = None,
    step_size: int | None = None,
    insertion_substrate: Any = "blur",
    deletion_substrate: Any = "zeros",
    normalisation: str | None = None,
    score: str = "prob",
    per_channel: bool = False,
    tie_break: str = "index",
    key: jax.Array | None = None,
    chunk_size: int | None = None,
) -> dict[str, CurveResult]:
    """Insertion and deletion curves (RISE protocol) in one compiled computation.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits [B, K]``.
      params: target parameters.
      x: ``[B, H, W, C]`` images in ``[0, 1]``.
      attribution: ``[B, H, W]``; ``[B, H, W, C]`` (summed over channels, or
        ranked per channel with ``per_channel=True``); ``[B, gh, gw]`` with
        ``granularity="grid"``.
      target: ``[B]`` classes, an int, or ``None`` for ŷ = argmax f(x).
      granularity: ``"pixel"``, ``"patch"`` (``patch_size``² squares ranked by
        their summed attribution) or ``"grid"`` (the attribution's own cells,
        upsampled nearest).
      patch_size: patch side for ``"patch"``.
      num_steps: curve steps (``k_t = floor(t·F/num_steps)``); default 10 for
        patch/grid.
      step_size: features per step (RISE: 224, the pixel default).
      insertion_substrate: what features are inserted onto (see ``_substrate``).
      deletion_substrate: what deleted features become.
      normalisation: model family for ``"zeros_normalised"`` and the blur padding.
      score: ``"prob"`` (softmax probability of the target) or ``"top1"``.
      per_channel: rank each channel separately (MFABA's evaluation code).
      tie_break: ``"index"`` (stable) or ``"random"`` (needs ``key``).
      key: PRNG key for random tie-breaking.
      chunk_size: steps per forward pass (forward batch = ``2·B·chunk_size``).

    Returns:
      ``{"insertion": CurveResult, "deletion": CurveResult}``. Higher insertion
      AUC and lower deletion AUC are better.
    """
    options = dict(locals())  # exactly the arguments above
    modes = ("insertion", "deletion")
    plans = tuple((mode, options.pop(f"{mode}_substrate"), False) for mode in modes)
    return _rise_curves(plans, **options)


def _rise_curves(plans: tuple, **options: Any) -> dict[str, CurveResult]:
    """Curves of ``plans`` keyed by their mode, with RISE's normalised AUC.

    ``options`` are :func:`insertion_deletion`'s arguments but the substrates.
    """
    names = ("apply_fn", "params", "x", "attribution", "target")
    apply_fn, params, x, attribution, target = (options.pop(name) for name in names)
    scores, counts, num_features = _curves.run_curves(
        apply_fn, params, x, attribution, target, plans, **options
    )
    fractions = np.asarray(counts, np.float64) / num_features
    return {
        mode: CurveResult(scores[i], normalised_auc(scores[i]), fractions)
        for i, (mode, _, _) in enumerate(plans)
    }


def _single(mode: str, *, substrate: Any, **options: Any) -> CurveResult:
    """One insertion or deletion curve; ``options`` are :func:`insertion`'s arguments."""
    return _rise_curves(((mode, substrate, False),), **options)[mode]


def insertion(
    apply_fn: ApplyFn,
    params: Params,
    x: Any,
    attribution: Any,
    target: Any = None,
    *,
    substrate: Any = "blur",
    granularity: str = "pixel",
    patch_size: int | None = None,
    num_steps: int | None = None,
    step_size: int | None = None,
    normalisation: str | None = None,
    score: str = "prob",
    per_channel: bool = False,
    tie_break: str = "index",
    key: jax.Array | None = None,
    chunk_size: int | None = None,
) -> CurveResult:
    """Insertion curve: restore the top-``k_t`` features of ``x`` onto ``substrate``.

    Options as :func:`insertion_deletion`; returns a :class:`CurveResult` (higher AUC is better).
    """
    return _single("insertion", **locals())  # locals(): exactly the arguments above


def deletion(
    apply_fn: ApplyFn,
    params: Params,
    x: Any,
    attribution: Any,
    target: Any = None,
    *,
    substrate: Any = "zeros",
    granularity: str = "pixel",
    patch_size: int | None = None,
    num_steps: int | None = None,
    step_size: int | None = None,
    normalisation: str | None = None,
    score: str = "prob",
    per_channel: bool = False,
    tie_break: str = "index",
    key: jax.Array | None = None,
    chunk_size: int | None = None,
) -> CurveResult:
    """Deletion curve: replace the top-``k_t`` features of ``x`` with ``substrate``.

    Options as :func:`insertion_deletion`; returns a :class:`CurveResult` (lower AUC is better).
    """
    return _single("deletion", **locals())  # locals(): exactly the arguments above


def pos_neg_perturbation(
    apply_fn: ApplyFn,
    params: Params,
    x: Any,
    attribution: Any,
    target: Any = None,
    *,
    substrate: Any = "zeros",
    normalisation: str | None = None,
    score: str = "top1",
    granularity: str = "pixel",
    patch_size: int | None = None,
    tie_break: str = "index",
    key: jax.Array | None = None,
    chunk_size: int | None = None,
) -> dict[str, CurveResult]:
    """POS and NEG perturbation tests (Chefer et al.; LTX) in one compiled computation.

    POS deletes the most relevant ``int(F·p)`` features, NEG the least
    relevant, for ``p = 0.1 … 0.9``; the first of the 10 curve points is the
    unperturbed input. AUC = 100 × trapezoid over ``p = 0, 0.1, …, 0.9``.

    Args:
      apply_fn, params, x, attribution, target: as :func:`insertion_deletion`.
      substrate: value of removed pixels (LTX: ``"zeros"`` in ``[0, 1]``).
      normalisation: family for ``"zeros_normalised"``/``"blur"``.
      score: ``"top1"`` (LTX) or ``"prob"``.
      granularity, patch_size, tie_break, key, chunk_size: as :func:`insertion_deletion`.

    Returns:
      ``{"pos": CurveResult, "neg": CurveResult}`` (lower POS, higher NEG AUC are better).
    """
    plans = (("deletion", substrate, False), ("deletion", substrate, True))
    check_choice("granularity", granularity, _ranking.GRANULARITIES)
    grid_hw = tuple(np.shape(attribution)[1:3])
    image_hw = tuple(np.shape(x)[1:3])
    if granularity == "patch":
        patch_size = _curves.positive_int(patch_size, "patch_size")
    if len(image_hw) != 2 or len(grid_hw) != 2:
        check_images(x, "x")
        raise ValueError(f"attribution must be [B, H, W]; got shape {np.shape(attribution)}")
    _, num_features = _ranking.feature_index_map(image_hw, granularity, patch_size or 1, grid_hw)
    counts = tuple(int(num_features * p) for p in POS_NEG_FRACTIONS)
    scores, _, _ = _curves.run_curves(
        apply_fn,
        params,
        x,
        attribution,
        target,
        plans,
        granularity=granularity,
        patch_size=patch_size,
        num_steps=None,
        step_size=None,
        score=score,
        tie_break=tie_break,
        key=key,
        chunk_size=chunk_size,
        normalisation=normalisation,
        per_channel=False,
        counts=counts,
    )
    fractions = np.asarray(POS_NEG_FRACTIONS)
    width = POS_NEG_FRACTIONS[-1]
    return {
        name: CurveResult(scores[i], 100.0 * width * normalised_auc(scores[i]), fractions)
        for i, name in enumerate(("pos", "neg"))
    }


@functools.partial(jax.jit, static_argnames=("apply_fn", "normalise"))
def _adp_pic(apply_fn, params, x, saliency, target, *, normalise):
    if normalise:
        saliency = maps.minmax_normalise(saliency, (1, 2), eps=1e-12, eps_mode="floor")
    masked = x * saliency[..., None]
    logits = apply_fn(params, jnp.concatenate([x, masked], axis=0))
    if target is None:  # ŷ from the clean half of the same forward pass
        target = jnp.argmax(logits[: x.shape[0]], axis=-1)
    probs = _curves.score_logits(logits.reshape(2, x.shape[0], -1), target, "prob")
    prob, masked_prob = probs[0], probs[1]
    adp = 100.0 * jnp.maximum(prob - masked_prob, 0.0) / prob
    pic = 100.0 * (masked_prob > prob).astype(jnp.float32)
    return AdpPicResult(adp, pic, prob, masked_prob)


def adp_pic(
    apply_fn: ApplyFn,
    params: Params,
    x: Any,
    attribution: Any,
    target: Any = None,
    *,
    normalise: bool = True,
) -> AdpPicResult:
    """Average Drop % and Percentage Increase in Confidence of ``x ⊙ map``.

    Args:
      apply_fn, params, x, target: as :func:`insertion_deletion`.
      attribution: ``[B, H, W]`` map, or ``[B, gh, gw]`` (upsampled nearest).
      normalise: min-max normalise each map to ``[0, 1]`` first (LTX); if
        False the map must already lie in ``[0, 1]``.

    Returns:
      :class:`AdpPicResult` per input.
    """
    check_images(x, "x")
    check_range(x, "x")
    x = jnp.asarray(x)
    shape = tuple(np.shape(attribution))
    if len(shape) != 3 or shape[0] != x.shape[0] or shape[1] > x.shape[1] or shape[2] > x.shape[2]:
        raise ValueError(f"attribution must have shape {x.shape[:3]} (or a grid); got {shape}")
    attribution = _curves.check_attribution(attribution, x, "grid", False)
    if not normalise:
        check_range(attribution, "attribution")
    if shape[1:] != x.shape[1:3]:
        index, _ = _ranking.feature_index_map(x.shape[1:3], "grid", 1, shape[1:])
        attribution = attribution.reshape(shape[0], -1)[:, jnp.asarray(index)]
    if target is not None:
        target = resolve_target(apply_fn, params, x, target)
    return _adp_pic(apply_fn, params, x, attribution.astype(x.dtype), target, normalise=normalise)


def insertion_auc(
    apply_fn: ApplyFn, params: Params, x: Any, attribution: Any, target: Any = None, **protocol
) -> jax.Array:
    """``[B]`` insertion AUC: :func:`insertion` with the same options (higher is better)."""
    return insertion(apply_fn, params, x, attribution, target, **protocol).auc


def deletion_auc(
    apply_fn: ApplyFn, params: Params, x: Any, attribution: Any, target: Any = None, **protocol
) -> jax.Array:
    """``[B]`` deletion AUC: :func:`deletion` with the same options (lower is better)."""
    return deletion(apply_fn, params, x, attribution, target, **protocol).auc
