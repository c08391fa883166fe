"""The one training step of every learned explainer.

``make_update(loss_fn, optimizer)`` is the only place with ``value_and_grad``,
the NaN guard and the step counter; a method contributes only its
``loss_fn(params, batch, key) -> (loss, metrics)`` (optax's
``GradientTransformation`` split of concerns: the method is pure functions, the
optimizer is passed in by the caller).

A method whose ``loss_fn`` carries a ``rollout`` attribute (FEX's PPO) is trained
by :func:`make_rollout_update`: a gradient-free rollout per data batch, then one
``make_update`` step per minibatch of it (``lax.scan``); :func:`update_for`
picks the right one for a :class:`~fastxai_jax.core.LearnedExplainer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fastxai_jax.core import LearnedExplainer, LossFn, Params
from fastxai_jax.train.loop import TrainState, _all_finite, init_state, make_optimizer

__all__ = [
    "RolloutRows",
    "freeze",
    "init_train_state",
    "make_rollout_update",
    "make_trainer",
    "make_update",
    "optimizer_for",
    "update_for",
]


class RolloutRows(NamedTuple):
    """The ``batch`` of one minibatch step: the whole rollout and the rows it uses."""

    rollout: Any
    rows: jax.Array


def make_update(
    loss_fn: LossFn, optimizer: optax.GradientTransformation
) -> Callable[[TrainState, Any, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """``update(state, batch, key) -> (state, metrics)``: one optimizer step on ``loss_fn``.

    A non-finite loss or gradient never enters the params or the optimizer state;
    ``metrics["loss"]`` is then NaN, so :func:`fastxai_jax.train.loop.fit` raises
    ``FloatingPointError`` naming the step.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> (loss, metrics dict)``.
      optimizer: an optax transformation, built once by the caller
        (see :func:`optimizer_for` for a method's frozen leaves).
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable; got {type(loss_fn).__name__}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            f"optimizer must be an optax.GradientTransformation; got {type(optimizer).__name__}"
        )
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update(state: TrainState, batch: Any, key: jax.Array):
        (loss, metrics), grads = grad_fn(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        params = jax.tree.map(lambda n, o: jnp.where(finite, n, o), params, state.params)
        opt_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), opt_state, state.opt_state)
        metrics = {"loss": jnp.where(finite, loss, jnp.nan), **metrics}
        new_state = state._replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return update


def make_rollout_update(
    loss_fn: LossFn, rollout: Callable[..., Any], optimizer: optax.GradientTransformation
) -> Callable[[TrainState, Any, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """``update(state, batch, key)``: a rollout, then one optimizer step per row set.

    PPO's consumption of a rollout (Schulman et al. 2017; FEX's ``ppo_iter``):
    ``rollout(params, batch, key) -> (data, rows [S, m], metrics)`` runs without
    gradient; step ``i`` is :func:`make_update`'s step on
    ``loss_fn(params, RolloutRows(data, rows[i]), key_i)``, in a ``lax.scan``.
    Metrics are the steps' means plus the rollout's; ``state.step`` grows by one.
    """
    step = make_update(loss_fn, optimizer)

    def update(state: TrainState, batch: Any, key: jax.Array):
        rollout_key, step_key = jax.random.split(key)
        data, rows, rollout_metrics = rollout(state.params, batch, rollout_key)
        data = jax.lax.stop_gradient(data)

        def body(carry, xs):
            index, row_set = xs
            return step(carry, RolloutRows(data, row_set), jax.random.fold_in(step_key, index))

        steps = jnp.arange(rows.shape[0])
        new_state, metrics = jax.lax.scan(body, state, (steps, rows))
        metrics = {name: jnp.mean(value) for name, value in metrics.items()}
        return new_state._replace(step=state.step + 1), {**metrics, **rollout_metrics}

    return update


def update_for(
    learned: LearnedExplainer, optimizer: optax.GradientTransformation
) -> Callable[[TrainState, Any, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """The training step of ``learned``: :func:`make_rollout_update` when its
    ``loss_fn`` has a ``rollout`` (FEX), else :func:`make_update`."""
    rollout = getattr(learned.loss_fn, "rollout", None)
    if rollout is None:
        return make_update(learned.loss_fn, optimizer)
    return make_rollout_update(learned.loss_fn, rollout, optimizer)


def freeze(
    optimizer: optax.GradientTransformation, frozen: Callable[[Params], Any]
) -> optax.GradientTransformation:
    """``optimizer`` on every leaf except those ``frozen(params)`` marks ``True`` (zero update)."""

    def labels(params):
        return jax.tree.map(lambda is_frozen: "frozen" if is_frozen else "train", frozen(params))

    return optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()}, labels)


def optimizer_for(
    learned: LearnedExplainer, optimizer: optax.GradientTransformation
) -> optax.GradientTransformation:
    """``optimizer`` with the method's frozen leaves (if any) set to zero update."""
    return optimizer if learned.frozen is None else freeze(optimizer, learned.frozen)


def init_train_state(
    learned: LearnedExplainer,
    optimizer: optax.GradientTransformation,
    key: jax.Array,
    sample_batch: Any,
) -> TrainState:
    """``TrainState`` at step 0: ``learned.init_params`` and ``optimizer.init``
    (pass the same ``optimizer_for(learned, ...)`` as to :func:`make_update`)."""
    return init_state(learned.init_params(key, sample_batch), optimizer)


def make_trainer(
    learned: LearnedExplainer, optimizer: optax.GradientTransformation
) -> tuple[Callable[[jax.Array, Any], TrainState], Callable[..., Any]]:
    """``(init, update)`` for ``learned`` and ``optimizer`` (frozen leaves added once):
    ``init(key, sample_batch) -> TrainState`` and ``update = update_for(...)``."""
    optimizer = optimizer_for(learned, optimizer)

    def init(key: jax.Array, sample_batch: Any) -> TrainState:
        return init_train_state(learned, optimizer, key, sample_batch)

    return init, update_for(learned, optimizer)


def adamw_warmup_cosine(
    total_steps: int,
    *,
    learning_rate: float,
    warmup_frac: float = 0.05,
    weight_decay: float = 1e-4,
) -> optax.GradientTransformation:
    """AdamW, linear warm-up then cosine decay over ``total_steps`` (FastSHAP's and
    TVE's default optimizer, each with its own ``learning_rate``)."""
    return make_optimizer(
        "adamw",
        learning_rate,
        warmup_frac=warmup_frac,
        total_steps=total_steps,
        weight_decay=weight_decay,
    )
