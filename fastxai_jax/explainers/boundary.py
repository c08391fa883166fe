"""Adversarial-path baselines of the MFABA paper: BIG and AGI (SPEC §1).

* BIG (Wang et al., 2021, "boundary-based integrated gradients"), as the MFABA
  authors run it: for each ε in an ascending list, an iterated FGSM attack
  (``num_attack_steps`` steps of ``α·sign(∇ CE)``, projected to the ε L∞ ball
  and to ``data_range``) looks for a point of another class; per sample, the
  first ε whose attack succeeds gives the boundary point (the first ε's point
  when none does), and the attribution is Integrated Gradients from that point
  to ``x`` (trapezoid rule). Note: with the authors' ``α = 0.001`` and 50 steps
  the attack never moves more than 0.05 in L∞, below every listed ε
  (≥ 36/255), so all seven attacks coincide; the list is kept for fidelity
  and its cost reported.
* AGI (Pan et al., 2021, "adversarial gradient integration"): for each of
  ``num_false_classes`` random classes ``c ≠ target``, ascend ``p(c)`` by
  ``ε·sign(∇ p(c))`` for up to ``max_iter`` steps (stopping per sample once the
  prediction is ``c``) and sum ``−∇ p(target) ⊙ Δx`` along the way.

Authors' quirks as options (clean defaults): BIG ``accumulate_gradients=True``
and ``ig_method="captum_trapezoid"``; AGI ``from_original=True`` with
``batch_coupling=True`` (``_agi_authors``). ``tests/parity`` checks them against
the authors' outputs.

Both return ``[B, H, W]`` (channel sum, signed) or per channel.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from fastxai_jax.core import ApplyFn, Cost, Params
from fastxai_jax.explainers import _common
from fastxai_jax.explainers._agi_authors import agi_coupled
from fastxai_jax.explainers.gradients import IG_METHODS, _path_integral

BIG_EPSILONS = tuple(
    e / 255.0 for e in (36, 64, 0.3 * 255, 0.5 * 255, 0.7 * 255, 0.9 * 255, 1.1 * 255)
)


def _bcast(v: jax.Array, ref: jax.Array) -> jax.Array:
    return v.reshape((-1,) + (1,) * (ref.ndim - 1))


def _ce_grad(apply_fn, params, x, target):
    def loss(xs):
        return -jnp.sum(_common.class_score(apply_fn(params, xs), target, "log_probability"))

    return jax.grad(loss)(x)


def fgsm_attack(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    target: jax.Array,
    epsilon: float | jax.Array,
    *,
    num_steps: int = 50,
    step_size: float = 0.001,
    data_range: tuple[float, float] = (0.0, 1.0),
    accumulate_gradients: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Iterated FGSM away from ``target`` (the MFABA authors' ``FGSM``).

    Args:
      apply_fn, params, x, target: the model and ``[B, H, W, C]`` inputs.
      epsilon: L∞ radius in input units.
      num_steps: attack steps.
      step_size: ``α`` per step.
      data_range: clip range.
      accumulate_gradients: step along the sign of the running sum of the CE
        gradients (the authors' ``FGSM`` never clears ``dt.grad``).

    Returns:
      ``(x_adv [B, H, W, C], success [B] bool)``, success = prediction ≠ target.
    """

    def body(_, carry):
        xk, total = carry
        grad = _ce_grad(apply_fn, params, xk, target)
        total = total + grad if accumulate_gradients else grad
        moved = xk + step_size * jnp.sign(total)
        return jnp.clip(x + jnp.clip(moved - x, -epsilon, epsilon), *data_range), total

    x_adv, _ = jax.lax.fori_loop(0, num_steps, body, (x, jnp.zeros_like(x)))
    success = jnp.argmax(apply_fn(params, x_adv), axis=-1) != target
    return x_adv, success


@functools.partial(
    jax.jit,
    static_argnames=(
        "apply_fn",
        "epsilons",
        "num_attack_steps",
        "step_size",
        "num_steps",
        "score",
        "batch_size",
        "data_range",
        "per_channel",
        "accumulate_gradients",
        "ig_method",
    ),
)
def _big(
    apply_fn,
    params,
    x,
    target,
    epsilons,
    num_attack_steps,
    step_size,
    num_steps,
    score,
    batch_size,
    data_range,
    per_channel,
    accumulate_gradients,
    ig_method,
):
    def search(carry, indexed_eps):
        chosen, found = carry
        index, eps = indexed_eps
        x_adv, success = fgsm_attack(
            apply_fn,
            params,
            x,
            target,
            eps,
            num_steps=num_attack_steps,
            step_size=step_size,
            data_range=data_range,
            accumulate_gradients=accumulate_gradients,
        )
        take = (~found & success) | (index == 0)
        chosen = jnp.where(_bcast(take, x), x_adv, chosen)
        return (chosen, found | success), None

    eps_array = jnp.asarray(epsilons, x.dtype)
    indices = jnp.arange(len(epsilons))
    init = (x, jnp.zeros((x.shape[0],), bool))
    (boundary, _), _ = jax.lax.scan(search, init, (indices, eps_array))
    attribution = _path_integral(
        apply_fn, params, x, boundary, target, score, num_steps, ig_method, batch_size
    )
    return _common.reduce_channels(attribution, per_channel)


def big(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    target: jax.Array,
    *,
    key: Any = None,
    epsilons: tuple[float, ...] = BIG_EPSILONS,
    num_attack_steps: int = 50,
    step_size: float = 0.001,
    num_steps: int = 50,
    score: str = "logit",
    batch_size: int | None = 16,
    data_range: tuple[float, float] = (0.0, 1.0),
    per_channel: bool = False,
    accumulate_gradients: bool = False,
    ig_method: str = "riemann_trapezoid",
) -> jax.Array:
    """BIG: Integrated Gradients from the closest-ε FGSM boundary point.

    Args:
      apply_fn, params, x, target: the model, ``[B, H, W, C]`` inputs, ``[B]`` classes.
      key: unused (deterministic).
      epsilons: ascending L∞ radii in input units (authors: ``{36, 64, 76.5, 127.5,
        178.5, 229.5, 280.5}/255``).
      num_attack_steps: FGSM steps per ε (authors: 50).
      step_size: FGSM step ``α`` (authors: 0.001).
      num_steps: IG steps, trapezoid rule (authors: 50).
      score: IG's class score (``"logit"``; the authors' softmax models give
        ``"probability"``).
      batch_size: IG points evaluated at once.
      data_range: clip range of the attack.
      per_channel: return ``[B, H, W, C]``.
      accumulate_gradients: ``False`` (default, the BIG paper's FGSM): each step
        follows ``sign(∇CE(x_k))``. ``True``: the MFABA authors' ``FGSM`` quirk,
        ``sign(Σ_{s≤k} ∇CE(x_s))`` (they never clear ``dt.grad``).
      ig_method: IG quadrature: ``"riemann_trapezoid"`` (default, weights sum to
        1) or ``"captum_trapezoid"``, Captum's rule the authors call (weights sum
        to ``(n − 1)/n``); see :func:`~fastxai_jax.explainers.gradients.ig_alphas_and_weights`.
        Parity with the authors' ``big`` needs both options.

    Returns:
      ``[B, H, W]`` signed attribution.
    """
    del key
    if not isinstance(accumulate_gradients, bool):
        raise ValueError(f"accumulate_gradients must be a bool; got {accumulate_gradients!r}")
    _common.check_choice("ig_method", ig_method, IG_METHODS)
    _common.validate(
        apply_fn, params, x, target, num_steps=num_steps, num_attack_steps=num_attack_steps
    )
    target = jnp.asarray(target, jnp.int32)
    _common.check_choice("score", score, _common.SCORES)
    epsilons = tuple(float(e) for e in epsilons)
    if not epsilons or min(epsilons) <= 0:
        raise ValueError(f"epsilons must be a non-empty tuple of positive radii; got {epsilons}")
    return _big(
        apply_fn,
        params,
        x,
        target,
        epsilons,
        int(num_attack_steps),
        float(step_size),
        int(num_steps),
        score,
        batch_size,
        (float(data_range[0]), float(data_range[1])),
        bool(per_channel),
        accumulate_gradients,
        ig_method,
    )


def _big_cost(
    epsilons: tuple[float, ...] = BIG_EPSILONS,
    num_attack_steps: int = 50,
    num_steps: int = 50,
    **_: Any,
) -> Cost:
    attacks = len(epsilons)
    return Cost(
        attacks * (num_attack_steps + 1) + num_steps, attacks * num_attack_steps + num_steps
    )


# ------------------------------------------------------------------------- AGI


@functools.partial(
    jax.jit,
    static_argnames=("apply_fn", "num_false_classes", "max_iter", "from_original", "per_channel"),
)
def _agi(
    apply_fn,
    params,
    x,
    target,
    key,
    epsilon,
    num_false_classes,
    max_iter,
    from_original,
    per_channel,
):
    batch = x.shape[0]
    num_classes = jax.eval_shape(apply_fn, params, x).shape[-1]
    # a uniform class other than target: draw from K-1 and skip over target
    draws = jax.random.randint(key, (num_false_classes, batch), 0, num_classes - 1)
    false_classes = (draws + (draws >= target[None, :])).astype(jnp.int32)

    def prob_cotangent(logits, cls):
        return jax.grad(lambda lg: jnp.sum(_common.class_score(lg, cls, "probability")))(logits)

    def one_class(false_class):
        def cond(state):
            i, _, _, done = state
            return (i < max_iter) & ~jnp.all(done)

        def body(state):
            i, xk, total, done = state
            logits, vjp_fn = jax.vjp(lambda xs: apply_fn(params, xs), xk)
            done = done | (jnp.argmax(logits, axis=-1) == false_class)
            active = _bcast(~done, x)
            (grad_adv,) = vjp_fn(prob_cotangent(logits, false_class))
            (grad_lab,) = vjp_fn(prob_cotangent(logits, target))
            start = x if from_original else xk
            x_next = jnp.clip(start + epsilon * jnp.sign(grad_adv), 0.0, 1.0)
            total = total + jnp.where(active, -grad_lab * (x_next - start), 0.0)
            return i + 1, jnp.where(active, x_next, xk), total, done

        init = (jnp.zeros((), jnp.int32), x, jnp.zeros_like(x), jnp.zeros((batch,), bool))
        return jax.lax.while_loop(cond, body, init)[2]

    attribution = jnp.sum(jax.lax.map(one_class, false_classes), axis=0)
    return _common.reduce_channels(attribution, per_channel)


def agi(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    target: jax.Array,
    *,
    key: jax.Array,
    epsilon: float = 0.05,
    max_iter: int = 20,
    num_false_classes: int = 1,
    from_original: bool = False,
    per_channel: bool = False,
    batch_coupling: bool = False,
    false_class: int | None = None,
) -> jax.Array:
    """AGI (Pan et al., 2021): integrate ``−∇p(target)`` along paths to false classes.

    Args:
      apply_fn, params, x, target: the model, ``[B, H, W, C]`` in [0, 1], ``[B]`` classes.
      key: picks the false classes (uniform over classes ≠ target, per sample).
      epsilon: sign-step length (authors: 0.05).
      max_iter: steps per false class (authors: 20).
      num_false_classes: random false classes summed over (authors: 1).
      from_original: the MFABA repository's quirk of taking every step from the
        original ``x`` (``x + ε·sign(∇p_c(x_k))``) rather than from ``x_k``.
      per_channel: return ``[B, H, W, C]``.
      batch_coupling: ``False`` (default, the AGI paper: samples independent).
        ``True`` runs the MFABA authors' ``pgd_step`` as written, whose numbers
        depend on the batch: one false class ``c`` for the whole batch (``c + 1``
        for samples whose ``target`` is ``c``); each sample's gradients are those
        of the *batch sums* ``Σ_j p(c_j)`` and ``Σ_j p(target_j)`` (their
        ``output[:, targeted].sum()``); the first step counts for every sample;
        a sample leaves once it is predicted as its false class, checked by their
        list-removal loop that skips the element after each removed one. Needs
        ``from_original=True`` and ``num_false_classes=1`` (their ``topk``).
      false_class: the batch's false class ``c`` with ``batch_coupling`` (the
        authors draw ``random.seed(3407); random.sample(range(999), 1)``);
        ``None`` draws it uniformly from ``[0, K − 1)`` with ``key``.

    Returns:
      ``[B, H, W]`` signed attribution.
    """
    num_classes = _common.validate(
        apply_fn, params, x, target, max_iter=max_iter, num_false_classes=num_false_classes
    )
    target = jnp.asarray(target, jnp.int32)
    if key is None and not (batch_coupling and false_class is not None):
        raise ValueError("key is required for agi (random false classes)")
    if num_classes < 2:
        raise ValueError(f"agi needs at least 2 classes; apply_fn gives {num_classes}")
    if not float(epsilon) > 0:
        raise ValueError(f"epsilon must be > 0; got {epsilon!r}")
    if not isinstance(batch_coupling, bool):
        raise ValueError(f"batch_coupling must be a bool; got {batch_coupling!r}")
    if false_class is not None and not batch_coupling:
        raise ValueError("false_class is only used with batch_coupling=True")
    if batch_coupling:
        if not from_original:
            raise ValueError(
                "batch_coupling=True reproduces the authors' pgd_step, which steps from "
                "the original x: set from_original=True"
            )
        if num_false_classes != 1:
            raise ValueError(
                f"batch_coupling=True supports num_false_classes=1; got {num_false_classes}"
            )
        if false_class is None:
            false_class = jax.random.randint(key, (), 0, num_classes - 1)
        elif not 0 <= int(false_class) < num_classes:
            raise ValueError(f"false_class must be in [0, {num_classes}); got {false_class!r}")
        return agi_coupled(
            apply_fn,
            params,
            x,
            target,
            jnp.asarray(false_class, jnp.int32),
            float(epsilon),
            int(max_iter),
            bool(per_channel),
        )
    return _agi(
        apply_fn,
        params,
        x,
        target,
        key,
        float(epsilon),
        int(num_false_classes),
        int(max_iter),
        bool(from_original),
        bool(per_channel),
    )


def _agi_cost(max_iter: int = 20, num_false_classes: int = 1, **_: Any) -> Cost:
    return Cost(num_false_classes * max_iter, 2 * num_false_classes * max_iter)
