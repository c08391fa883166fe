"""The one training loop every learned explainer and target model uses.

``fit`` jit-compiles a user ``update(state, batch, key) -> (state, metrics)``
once, feeds it deterministic batches ``batch_fn(step)`` and per-step keys
``fold_in(key, step)``, shows a progress bar, appends a JSONL log, saves
checkpoints and resumes from them, and refuses to let a non-finite loss into
the parameters.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from fastxai_jax.train._reproducible import reproducible_compiler_options
from fastxai_jax.train.checkpoint import Checkpointer, rewind_log
from fastxai_jax.train.sharding import place_batch, replicate

__all__ = ["TrainState", "fit", "make_optimizer", "init_state"]


class TrainState(NamedTuple):
    """Everything a training run carries between steps.

    Attributes:
      step: scalar int32, number of updates applied so far.
      params: the trained parameter pytree.
      opt_state: the optax optimiser state.
      extra: any other pytree (batch-norm statistics, baselines, target
        params, ...); may be ``None`` or ``{}``.
    """

    step: Any
    params: Any
    opt_state: Any
    extra: Any = None


def init_state(params: Any, optimizer: optax.GradientTransformation, extra: Any = None):
    """A ``TrainState`` at step 0 with ``optimizer.init(params)``."""
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), extra)


def make_optimizer(
    name: str = "adam",
    lr: float = 1e-3,
    *,
    warmup_frac: float = 0.0,
    total_steps: int | None = None,
    schedule: str | None = None,
    momentum: float | None = None,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
) -> optax.GradientTransformation:
    """An optax optimiser with a linear-warmup + cosine/constant learning-rate schedule.

    Args:
      name: ``"adam"``, ``"adamw"`` or ``"sgd"``.
      lr: peak learning rate.
      warmup_frac: fraction of ``total_steps`` spent warming up linearly from 0.
      total_steps: schedule length; required for warm-up or the cosine schedule.
      schedule: ``"cosine"`` (decay to 0 at ``total_steps``) or ``"constant"``;
        default cosine when ``total_steps`` is given, else constant.
      momentum: SGD momentum (``None`` = plain SGD); ignored by Adam.
      nesterov: SGD Nesterov momentum.
      weight_decay: decoupled weight decay for ``adamw``; L2 added to the
        gradient for ``adam``/``sgd``.
      clip_norm: optional global gradient-norm clipping.
    """
    if name not in ("adam", "adamw", "sgd"):
        raise ValueError(f"name must be 'adam', 'adamw' or 'sgd'; got {name!r}")
    if not (isinstance(lr, int | float) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number; got {lr!r}")
    if not 0.0 <= warmup_frac < 1.0:
        raise ValueError(f"warmup_frac must lie in [0, 1); got {warmup_frac}")
    if total_steps is not None and int(total_steps) < 1:
        raise ValueError(f"total_steps must be >= 1; got {total_steps}")
    if schedule is None:
        schedule = "constant" if total_steps is None else "cosine"
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant'; got {schedule!r}")
    if total_steps is None and (schedule == "cosine" or warmup_frac > 0):
        raise ValueError("total_steps is required for warmup_frac > 0 or schedule='cosine'")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay}")

    if total_steps is None:
        learning_rate: Any = lr
    else:
        warmup = int(round(warmup_frac * int(total_steps)))
        if schedule == "cosine":
            learning_rate = optax.warmup_cosine_decay_schedule(
                0.0, lr, warmup, max(int(total_steps), warmup + 1), end_value=0.0
            )
        else:
            learning_rate = optax.join_schedules(
                [optax.linear_schedule(0.0, lr, max(warmup, 1)), optax.constant_schedule(lr)],
                [warmup],
            )
    chain = []
    if clip_norm is not None:
        chain.append(optax.clip_by_global_norm(clip_norm))
    if name == "adamw":
        chain.append(optax.adamw(learning_rate, weight_decay=weight_decay))
    else:
        if weight_decay > 0:
            chain.append(optax.add_decayed_weights(weight_decay))
        if name == "adam":
            chain.append(optax.adam(learning_rate))
        else:
            chain.append(optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))
    return chain[0] if len(chain) == 1 else optax.chain(*chain)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _select(ok: jax.Array, new: Any, old: Any) -> Any:
    if isinstance(new, jax.Array) and jax.dtypes.issubdtype(new.dtype, jax.dtypes.prng_key):
        data = jnp.where(ok, jax.random.key_data(new), jax.random.key_data(old))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(new))
    return jnp.where(ok, new, old)


def _make_step(update: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps ``update``: per-step key, step counter, and a NaN guard inside jit."""

    def step_fn(state, batch, key):
        step = jnp.asarray(state.step, jnp.int32)
        new_state, metrics = update(state, batch, jax.random.fold_in(key, step))
        new_state = new_state._replace(step=step + 1)
        ok = _all_finite(new_state.params)
        if isinstance(metrics, dict) and "loss" in metrics:
            ok = ok & jnp.all(jnp.isfinite(metrics["loss"]))
        # A non-finite loss or update never reaches the parameters: keep the old state.
        old_state = state._replace(step=step + 1)
        kept = jax.tree.map(lambda new, old: _select(ok, new, old), new_state, old_state)
        return kept, metrics, ok

    return step_fn


def _host_metrics(metrics: Any) -> dict[str, Any]:
    out = {}
    for name, value in (metrics or {}).items():
        arr = np.asarray(jax.device_get(value))
        out[name] = float(arr) if arr.size == 1 else arr.astype(float).tolist()
    return out


def _copy_tree(tree: Any) -> Any:
    """Fresh device buffers, so that donating them never invalidates the caller's state."""

    def copy(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(
                jnp.array(jax.random.key_data(x), copy=True), impl=jax.random.key_impl(x)
            )
        return jnp.array(x, copy=True)

    return jax.tree.map(copy, tree)


def fit(
    state: TrainState,
    update: Callable[..., Any],
    batch_fn: Callable[[int], Any],
    *,
    num_steps: int,
    key: jax.Array,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    log_path: str | os.PathLike | None = None,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
    config: Any = None,
    max_to_keep: int = 3,
    process_local_batches: bool = False,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Runs ``update`` until ``state.step == num_steps``, resuming from a checkpoint.

    Args:
      state: the initial ``TrainState`` (a template when a checkpoint exists).
        It is copied, never donated, so the caller may reuse it.
      update: ``update(state, batch, key) -> (state, metrics)``, a pure
        function jit-compiled once here (with the state donated). ``metrics`` is
        a dict of scalars; ``metrics["loss"]`` (if present) is checked for NaN/Inf.
        The loop sets ``state.step`` itself.
      batch_fn: ``batch_fn(step) -> batch``, deterministic in ``step`` so that a
        resumed run sees the same data as an uninterrupted one.
      num_steps: the TOTAL number of steps of the run (not the number left).
      key: base PRNG key; step ``s`` gets ``jax.random.fold_in(key, s)``.
      checkpoint_dir: where to save every ``checkpoint_every`` steps and at the
        end; an existing checkpoint there is restored first (its config must
        equal ``config``).
      checkpoint_every: steps between checkpoints.
      log_path: JSONL file appended with ``{"step", **metrics, "time"}`` per step
        (``step`` is the 0-based index of the update; ``time`` seconds since the
        run started, across resumes; records of steps a resume recomputes are
        dropped first).
      mesh: a ``data_mesh``, or under ``jax.distributed`` a ``global_mesh``
        over every process's devices; batches are sharded along ``"data"``
        (``train.sharding.place_batch``), the state replicated. Every process
        runs this same call; checkpoints go through orbax's multi-host path
        (all processes save, the primary host writes the shared files) and
        only process 0 writes ``log_path``.
      progress: show a tqdm progress bar with live metrics.
      config: JSON-serialisable run configuration stored with checkpoints.
      max_to_keep: checkpoints kept.
      process_local_batches: ``batch_fn(step)`` returns only this process's
        rows of the global batch (``train.sharding.process_rows``), so that
        each host reads its own data; default: the whole global batch.

    Returns:
      ``(final state, history)`` where ``history`` holds this call's log records.

    Raises:
      FloatingPointError: the loss (or the updated params) became NaN/Inf at a
        step; the state at that point (never containing the bad update) is
        attached as ``err.state``.
      ValueError: bad arguments, or a checkpoint with a different config/structure.
    """
    if not isinstance(num_steps, int | np.integer) or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative int; got {num_steps!r}")
    if not isinstance(checkpoint_every, int | np.integer) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive int; got {checkpoint_every!r}")
    if not isinstance(state, TrainState):
        raise ValueError(f"state must be a TrainState; got {type(state).__name__}")
    if config is not None:
        config = json.loads(json.dumps(config))

    checkpointer = None
    if checkpoint_dir is not None:
        checkpointer = Checkpointer(checkpoint_dir, max_to_keep=max_to_keep)
        if checkpointer.latest_step() is not None:
            template = state._replace(step=np.zeros((), np.int32))
            state, saved_config = checkpointer.restore(template)
            if config is not None and saved_config != config:
                raise ValueError(
                    f"checkpoint in {checkpointer.directory} was saved with config "
                    f"{saved_config!r}, which differs from config {config!r}; use another "
                    f"checkpoint_dir or the same config"
                )
    state = _copy_tree(state._replace(step=jnp.asarray(state.step, jnp.int32)))
    if mesh is not None:
        state = replicate(state, mesh)
    start = int(state.step)
    # Issue 17: reductions in a fixed order, so that the run does not depend on the core count.
    options = reproducible_compiler_options()
    step_fn = jax.jit(_make_step(update), donate_argnums=0, compiler_options=options)

    log_file, logged_seconds = None, 0.0
    if log_path is not None and jax.process_index() == 0:  # one log per run, not per host
        pathlib.Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        # Issue 20: a resumed run drops the records it will recompute and continues their time.
        logged_seconds = rewind_log(log_path, start)
        log_file = open(log_path, "a")
    bar = tqdm(total=num_steps, initial=min(start, num_steps), disable=not progress, leave=True)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter() - logged_seconds
    last_saved = start
    try:
        for step in range(start, num_steps):
            batch = batch_fn(step)
            if mesh is not None:
                batch = place_batch(batch, mesh, process_local=process_local_batches)
            state, metrics, ok = step_fn(state, batch, key)
            record = {"step": step, **_host_metrics(metrics)}
            record["time"] = time.perf_counter() - t0
            if not bool(ok):
                err = FloatingPointError(
                    f"non-finite loss or parameters at step {step} "
                    f"(metrics {record}); the update was discarded"
                )
                err.state = state._replace(step=jnp.asarray(step, jnp.int32))
                raise err
            history.append(record)
            if log_file is not None:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            bar.set_postfix(
                {k: f"{v:.4g}" for k, v in record.items() if isinstance(v, float) and k != "time"},
                refresh=False,
            )
            bar.update(1)
            if checkpointer is not None and (step + 1) % checkpoint_every == 0:
                checkpointer.save(step + 1, state, config)
                last_saved = step + 1
        if checkpointer is not None and int(state.step) != last_saved:
            checkpointer.save(int(state.step), state, config)
    except KeyboardInterrupt:
        # Keep the work done since the last checkpoint (if the state is intact).
        if checkpointer is not None:
            try:
                if int(state.step) != last_saved:
                    checkpointer.save(int(state.step), state, config)
            except Exception:  # e.g. interrupted while its buffers were donated
                pass
        raise
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
        if checkpointer is not None:
            checkpointer.close()
    return state, history
