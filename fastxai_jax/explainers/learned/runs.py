"""fit / save / load for ANY learned explainer (FEX, LTX, TVE, FastSHAP).

A run directory ``workdir`` holds::

  checkpoints/      resumable training checkpoints (orbax; resumed automatically)
  train_log.jsonl   one JSON record of metrics per step
  explainer/        the final params with ``{"method", "config", "num_classes"}``

:func:`load` rebuilds the explainer from the method table
(:mod:`fastxai_jax.explainers.registry`) and returns a :class:`Trained`, which
``fx.attribute(method, apply_fn, params, x, target, explainer=trained)`` and
``trained.explain(x, target)`` accept directly.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fastxai_jax.core import ApplyFn, LearnedExplainer, Params
from fastxai_jax.explainers import registry
from fastxai_jax.explainers.learned import fex_text
from fastxai_jax.explainers.learned._trained import Trained, check_num_classes
from fastxai_jax.explainers.learned._update import init_train_state, optimizer_for, update_for
from fastxai_jax.train.checkpoint import load_params, save_params
from fastxai_jax.train.loop import fit as fit_loop

__all__ = ["Trained", "check_num_classes", "fit", "load", "save"]


def _run_config(method: str, learned: LearnedExplainer, num_classes: Any, extra: Any) -> dict:
    return {
        "method": method,
        "config": dataclasses.asdict(learned.config),
        "num_classes": num_classes,
        **(extra or {}),
    }


def fit(
    method: str,
    learned: LearnedExplainer,
    optimizer: optax.GradientTransformation,
    batch_fn: Callable[[int], Any],
    *,
    sample_batch: Any,
    num_steps: int,
    key: jax.Array,
    init_key: jax.Array | None = None,
    workdir: str | os.PathLike | None = None,
    num_classes: int | None = None,
    checkpoint_every: int = 100,
    mesh: Any = None,
    progress: bool = True,
    run_config: dict[str, Any] | None = None,
    process_local_batches: bool = False,
) -> tuple[Trained, list[dict[str, Any]]]:
    """Trains ``learned`` with :func:`fastxai_jax.train.loop.fit` and saves it.

    Args:
      method: the method's table name, recorded with the params.
      learned: the explainer (``registry.make_learned`` or ``<method>.make``).
      optimizer: an optax optimizer (the method's frozen leaves are added here).
      batch_fn: ``batch_fn(step) -> batch``, deterministic in ``step``.
      sample_batch: the batch ``init_params`` validates and initialises on.
      num_steps: total steps of the run.
      key: per-step keys are ``fold_in(key, step)``.
      init_key: the key of ``init_params`` (default: ``key``'s first split, with
        the second one training).
      workdir: run directory (``checkpoints/``, ``train_log.jsonl``,
        ``explainer/``); ``None`` trains in memory only.
      num_classes: the target's class count (default ``learned.num_classes``).
      checkpoint_every, mesh, progress, process_local_batches: see
        ``train.loop.fit`` (multi-host: every process calls ``fit`` with
        ``mesh=train.sharding.global_mesh()``; with ``process_local_batches``
        each ``batch_fn`` returns only its process's rows).
      run_config: extra JSON settings recorded with checkpoints (e.g. the
        optimizer's), so a resumed run with other settings is refused.

    Returns:
      ``(Trained, history)``.
    """
    if not isinstance(learned, LearnedExplainer):
        raise ValueError(f"learned must be a LearnedExplainer; got {type(learned).__name__}")
    if num_classes is None:
        num_classes = learned.num_classes
    elif learned.num_classes is not None and int(num_classes) != learned.num_classes:
        raise ValueError(
            f"num_classes {num_classes} differs from the explainer's {learned.num_classes}"
        )
    if init_key is None:
        init_key, key = jax.random.split(key)
    optimizer = optimizer_for(learned, optimizer)
    state = init_train_state(learned, optimizer, init_key, sample_batch)
    config = _run_config(method, learned, num_classes, run_config)
    workdir = None if workdir is None else pathlib.Path(workdir)
    state, history = fit_loop(
        state,
        update_for(learned, optimizer),
        batch_fn,
        num_steps=num_steps,
        key=key,
        checkpoint_dir=None if workdir is None else workdir / "checkpoints",
        checkpoint_every=checkpoint_every,
        log_path=None if workdir is None else workdir / "train_log.jsonl",
        mesh=mesh,
        progress=progress,
        config=config,
        process_local_batches=process_local_batches,
    )
    params = jax.device_get(state.params)
    trained = Trained(method, learned, params, num_classes)
    if workdir is not None:
        save(workdir, trained, run_config)
    return trained, history


def save(
    workdir: str | os.PathLike, trained: Trained, extra: dict[str, Any] | None = None
) -> pathlib.Path:
    """Writes ``trained`` to ``workdir/explainer`` (params + method, config,
    num_classes); returns that path."""
    path = pathlib.Path(workdir) / "explainer"
    config = _run_config(trained.method, trained.explainer, trained.num_classes, extra)
    save_params(path, jax.device_get(trained.params), config)
    return path


# Config fields whose default changed after runs were saved without them: a saved
# run keeps the behaviour it was trained with (TVE's default became the authors'
# two-backbone head in issue 18; earlier runs hold the shared-backbone head).
# FEX's entropy and ε-greedy defaults became the authors' (mean over patches, whole
# mask) in the same issue.
_DEFAULTS_BEFORE_CHANGE: dict[str, dict[str, Any]] = {
    "tve": {"arch": "shared"},
    "fex": {"entropy_reduction": "sum", "epsilon_scope": "patch"},
}


def _config_fields(config_cls: type, fields: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(config_cls)}
    # Runs saved before issue 17 also hold optimizer settings, now outside the config.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in known}


def load(
    workdir: str | os.PathLike,
    *,
    apply_fn: ApplyFn | None = None,
    target_params: Params | None = None,
    module: Any = None,
    method: str | None = None,
    fns: Any = None,
) -> Trained:
    """Reads a run saved by :func:`fit` / :func:`save` (or ``fastxai train-explainer``).

    Args:
      workdir: the run directory (holding ``explainer/``).
      apply_fn, target_params, module: the target, for methods whose explainer
        is built from it (LTX, TVE, and ``backbone="target"``); FEX needs none.
      method: optional expected method name (refuses another method's run).
      fns: for a learned method over tokens (FEX, FastSHAP: a run of
        ``registry.TOKEN_LEARNED_METHODS``, told apart by its saved config): the
        text target (:class:`~fastxai_jax.explainers.tokens.TextFns`), with
        ``module`` the explainer transformer (``load_minilm()[0]``); see
        :func:`~fastxai_jax.explainers.learned.fex_text.load`.

    Raises:
      FileNotFoundError: no ``workdir/explainer``.
      ValueError: not a learned-explainer run, another method, or a target whose
        class count differs from the saved one.
    """
    path = pathlib.Path(workdir) / "explainer"
    if not path.exists():
        raise FileNotFoundError(f"no trained explainer in {path} (run train-explainer first)")
    _, saved = load_params(path)
    name = saved.get("method") if isinstance(saved, dict) else None
    if name not in registry.LEARNED_METHODS:
        raise ValueError(f"{path} does not hold a learned explainer (config {saved!r})")
    if method is not None and name != method.lower():
        raise ValueError(f"{path} holds a {name} explainer, not {method!r}")
    if name in registry.TOKEN_LEARNED_METHODS and fex_text.is_text_run(saved, name):
        spec = registry.TOKEN_LEARNED_METHODS[name]
        return fex_text.load(
            workdir, fns, module=module, method=name, config_cls=spec.config_cls, make_fn=spec.make
        )
    spec = registry.LEARNED_METHODS[name]
    fields = saved["config"] if "config" in saved else saved[name]  # pre-issue-17 runs: [name]
    fields = {**_DEFAULTS_BEFORE_CHANGE.get(name, {}), **fields}
    config = spec.config_cls(**_config_fields(spec.config_cls, fields))
    learned = spec.make(config, apply_fn, target_params, module=module)
    num_classes = saved.get("num_classes") or learned.num_classes
    size = getattr(config, "image_size", None) or getattr(module, "image_size", None) or 64
    sample = jnp.zeros((1, size, size, 3), jnp.float32)
    if apply_fn is not None:
        check_num_classes(num_classes, apply_fn, target_params, sample, "apply_fn")
    template = jax.eval_shape(lambda: learned.init_params(jax.random.key(0), sample))
    params, _ = load_params(path, template=template)
    return Trained(name, learned, jax.tree.map(jnp.asarray, params), num_classes)
