"""LTX's recipe pieces from the authors' code (LTX-Code/LTX; Barkan et al., ICDM
2023): the optimizer and its schedule, and the POS perturbation AUC
(``evaluation/perturbation_tests/seg_cls_perturbation_tests.py``) that stage B
uses to pick the best mask. Re-exported by
:mod:`fastxai_jax.explainers.learned.ltx`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fastxai_jax.core import ApplyFn, Params
from fastxai_jax.train.loop import make_optimizer

POS_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(10))
_SCHEDULES = ("linear", "constant")


def pos_keep_masks(saliency: jax.Array) -> jax.Array:
    """``[10, H, W]`` keep-masks of the POS test: 0 at the top ``int(F·p)`` pixels of
    ``saliency`` ``[H, W]`` for ``p = 0, 0.1, …, 0.9`` (ties: lower flat index first)."""
    num = saliency.size
    order = jnp.argsort(-jnp.reshape(saliency, (-1,)), stable=True)
    rank = jnp.zeros((num,), jnp.int32).at[order].set(jnp.arange(num, dtype=jnp.int32))
    counts = jnp.asarray([int(num * p) for p in POS_FRACTIONS], jnp.int32)
    keep = (rank[None, :] >= counts[:, None]).astype(saliency.dtype)
    return jnp.reshape(keep, (len(POS_FRACTIONS),) + saliency.shape)


def pos_auc_from_keep(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    keep: jax.Array,
    target: jax.Array,
    score: str = "top1",
) -> jax.Array:
    """POS AUC of one input ``x`` ``[H, W, C]`` given its ten keep-masks ``[10, H, W]``:
    ``100 ×`` the trapezoid over ``p = 0, …, 0.9`` (``sklearn.auc``, as the authors'
    ``seg_cls_perturbation_tests``) of top-1 agreement with ``target`` (or its
    probability, ``score="prob"``), deleted pixels zero in ``[0, 1]``."""
    logits = apply_fn(params, keep[..., None].astype(x.dtype) * x[None])
    if score == "top1":
        curve = (jnp.argmax(logits, axis=-1) == target).astype(x.dtype)
    else:
        curve = jax.nn.softmax(logits, axis=-1)[:, target]
    auc = (jnp.sum(curve) - 0.5 * curve[0] - 0.5 * curve[-1]) / (curve.shape[0] - 1)
    return 100.0 * POS_FRACTIONS[-1] * auc


def pos_auc_single(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    saliency: jax.Array,
    target: jax.Array,
    score: str = "top1",
) -> jax.Array:
    """POS perturbation AUC of one input (lower is better), as in SPEC §7.

    Deletes (zero in ``[0, 1]``) the top ``int(F·p)`` pixels for
    ``p = 0, 0.1, …, 0.9`` (ties broken by index; torch's ``topk`` order on ties
    is unspecified), scores top-1 agreement with ``target`` (or its probability)
    and returns ``100 × 0.9 ×`` the normalised trapezoid — the authors' POS AUC
    and :func:`fastxai_jax.metrics.pos_neg_perturbation`'s ``"pos"``.

    Args:
      x: ``[H, W, C]``; saliency: ``[H, W]``; target: scalar int.
    """
    return pos_auc_from_keep(apply_fn, params, x, pos_keep_masks(saliency), target, score)


def linear_warmup_decay(
    learning_rate: float, warmup_steps: int, total_steps: int
) -> optax.Schedule:
    """transformers' ``get_linear_schedule_with_warmup``, the authors' schedule:
    ``lr·t/warmup`` for ``t < warmup`` (the first step has lr 0), then
    ``lr·max(0, (total − t)/(total − warmup))``; ``t`` = steps already made."""

    def schedule(count):
        t = jnp.asarray(count, jnp.float32)
        warm = learning_rate * t / max(1, warmup_steps)
        decay = learning_rate * jnp.maximum(
            0.0, (total_steps - t) / max(1, total_steps - warmup_steps)
        )
        return jnp.where(t < warmup_steps, warm, decay)

    return schedule


def default_optimizer(
    total_steps: int,
    *,
    learning_rate: float = 2e-3,
    warmup_frac: float = 0.2,
    weight_decay: float = 1e-2,
    schedule: str = "linear",
) -> optax.GradientTransformation:
    """The authors' optimizer: torch ``AdamW`` (β 0.9/0.999, eps 1e-8, decoupled
    weight decay 0.01 on every trained leaf) with :func:`linear_warmup_decay`
    over ``warmup = int(total_steps·warmup_frac)`` (authors: ``total // 5``).

    ``schedule="constant"`` keeps the peak rate after the warm-up (this
    library's recipe before issue 18), so a stage B continuing a finished stage
    A does not run at lr 0. Stage B continues the optimizer's step count.
    """
    if not isinstance(total_steps, int | np.integer) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int; got {total_steps!r}")
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {_SCHEDULES}; got {schedule!r}")
    if not 0.0 <= warmup_frac < 1.0:
        raise ValueError(f"warmup_frac must lie in [0, 1); got {warmup_frac}")
    if schedule == "constant":
        return make_optimizer(
            "adamw", learning_rate, warmup_frac=warmup_frac, total_steps=int(total_steps),
            schedule="constant", weight_decay=weight_decay,
        )  # fmt: skip
    warmup = int(round(total_steps * warmup_frac, 6))
    lr = linear_warmup_decay(learning_rate, warmup, int(total_steps))
    return optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)
