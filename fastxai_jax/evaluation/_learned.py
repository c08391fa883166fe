"""Learned explainers for the evaluation: train one from a recipe, reload it, its cost.

:func:`train_explainer` trains any learned method of the table on the embedded
benchmark with a :class:`~fastxai_jax.configs.learned.LearnedRecipe`, through
:func:`fastxai_jax.explainers.learned.runs.fit` (checkpoints in
``WORKDIR/checkpoints``, resumed when run again; the explainer in
``WORKDIR/explainer``, read by :func:`~fastxai_jax.explainers.learned.runs.load`).
DAX has nothing to amortise: its per-input fits run on the training images and
the maps are saved (``WORKDIR/dax_maps.npy``). ``fastxai train-explainer`` and
the demo both call it; the target queries per explanation come from the table
(``registry.LEARNED_METHODS[name].target_queries_per_explain``).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.configs import learned as recipes
from fastxai_jax.configs.learned import LearnedRecipe
from fastxai_jax.core import Cost
from fastxai_jax.explainers import registry

Target = tuple[Any, Any, str, Callable[..., Any]]  # (module, variables, family, apply_fn)


def declared_cost(name: str) -> Cost:
    """The declared per-input target cost of learned explainer ``name``: its table
    entry's target queries per explain (TVE: 1, its encoder; ``Cost(-1, -1)``,
    unknown, for a name not in the table)."""
    spec = registry.LEARNED_METHODS.get(name)
    return Cost(-1, -1) if spec is None else Cost(int(spec.target_queries_per_explain), 0)


def trainable_methods() -> list[str]:
    """What :func:`train_explainer` trains: every learned method of the table, plus ``dax``."""
    return sorted([*registry.LEARNED_METHODS, "dax"])


def _images(recipe: LearnedRecipe) -> np.ndarray:
    from fastxai_jax.data.groundtruth import EXPLAINER_SEED, make_benchmark

    return make_benchmark(
        recipe.num_train, seed=EXPLAINER_SEED + recipe.seed, image_size=recipe.image_size
    )["images"]


def _batch_fn(images: np.ndarray, batch_size: int, seed: int):
    if batch_size > len(images):
        raise ValueError(f"batch_size {batch_size} exceeds num_train {len(images)}")
    order = np.random.default_rng(seed).permutation(len(images))
    per_epoch = len(images) // batch_size

    def batch_fn(step: int):
        start = (step % per_epoch) * batch_size
        return jnp.asarray(images[order[start : start + batch_size]])

    return batch_fn


def _train_fex(recipe, target, workdir, run) -> dict[str, Any]:
    from fastxai_jax.explainers.learned import fex_benchmark

    _, variables, family, apply_fn = target
    images = _images(recipe)
    num_classes = int(jax.eval_shape(apply_fn, variables, images[:1]).shape[-1])
    config = recipes.fex_config(recipe, num_classes, family)
    settings = recipes.optimizer_settings("fex", recipe)
    fex_benchmark.train_fex_on_benchmark(
        apply_fn,
        variables,
        images,
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        key=jax.random.key(recipe.seed),
        workdir=workdir,
        config=config,
        optimizer=settings,
        data_seed=recipe.seed,
        **run,
    )
    return {"method": "fex", "config": config.__dict__, "optimizer": settings}


def _config(name, recipe, target, images, target_name):
    module, variables, family, apply_fn = target
    if name == "ltx":
        return recipes.ltx_config(recipe, family, target_name)
    if name == "tve":
        from fastxai_jax.explainers.learned import tve

        encoder_fn = tve.encoder_from_module(module, family)
        embed_dim = int(jax.eval_shape(encoder_fn, variables, jnp.asarray(images[:1])).shape[-1])
        return recipes.tve_config(recipe, family, embed_dim)
    shape = jax.eval_shape(apply_fn, variables, jnp.asarray(images[:1])).shape
    return recipes.fastshap_config(recipe, family, int(shape[-1]))


def _train_peer(name, recipe, target, workdir, run, target_name) -> dict[str, Any]:
    """LTX / TVE / FastSHAP (``name``) through ``runs.fit``."""
    from fastxai_jax.explainers.learned import runs
    from fastxai_jax.train.loop import make_optimizer

    module, variables, _, apply_fn = target
    images = _images(recipe)
    num_classes = int(jax.eval_shape(apply_fn, variables, jnp.asarray(images[:1])).shape[-1])
    config = _config(name, recipe, target, images, target_name)
    settings = recipes.optimizer_settings(name, recipe)
    learned = registry.make_learned(name, config, apply_fn, variables, module=module)
    _, history = runs.fit(
        name,
        learned,
        make_optimizer(**settings),
        _batch_fn(images, recipe.batch_size, recipe.seed),
        sample_batch=jnp.asarray(images[:2]),
        num_steps=recipe.steps,
        key=jax.random.key(recipe.seed + 1),
        init_key=jax.random.key(recipe.seed),
        workdir=workdir,
        num_classes=num_classes,
        run_config={"optimizer": settings},
        **run,
    )
    losses = [h["loss"] for h in history]
    return {
        "method": name,
        "config": dataclasses.asdict(config),
        "optimizer": settings,
        "final_loss": losses[-1] if losses else None,
    }


def _run_dax(recipe, target, workdir) -> dict[str, Any]:
    from fastxai_jax.explainers import dax

    _, variables, _, apply_fn = target
    x = jnp.asarray(_images(recipe))
    classes = jnp.argmax(apply_fn(variables, x), axis=-1).astype(jnp.int32)
    options, size = recipes.dax_options(recipe), recipe.batch_size
    maps = [
        dax.dax(apply_fn, variables, x[i : i + size], classes[i : i + size],
                key=jax.random.fold_in(jax.random.key(recipe.seed), i), **options)
        for i in range(0, x.shape[0], size)
    ]  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    np.save(workdir / "dax_maps.npy", np.concatenate([np.asarray(m) for m in maps]))
    return {"method": "dax", "options": options, "num_images": int(x.shape[0])}


def train_explainer(
    name: str,
    target: Target,
    workdir: str | pathlib.Path,
    recipe: LearnedRecipe | None = None,
    *,
    target_name: str = "small_cnn",
    checkpoint_every: int = 100,
    devices: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains learned explainer ``name`` against ``target`` on the embedded benchmark.

    Args:
      name: one of :func:`trainable_methods` (``fex``, ``ltx``, ``tve``, ``fastshap``,
        or ``dax``, whose per-input maps of the training images are saved instead).
      target: ``(module, variables, family, apply_fn)`` of the target.
      workdir: the run directory (resumed when it holds checkpoints).
      recipe: what to train with (default :class:`LearnedRecipe`, the benchmark's).
      target_name: the target's model name (LTX's feature layer).
      checkpoint_every: steps between checkpoints.
      devices: data-parallel devices (``None``: one).
      progress: show a progress bar.

    Returns:
      A summary: ``method``, its ``config`` (DAX: ``options``) and ``optimizer``.
    """
    if name not in trainable_methods():
        raise ValueError(f"unknown method {name!r}; trainable: {trainable_methods()}")
    recipe = LearnedRecipe() if recipe is None else recipe
    if not isinstance(recipe, LearnedRecipe):
        raise ValueError(f"recipe must be a LearnedRecipe; got {type(recipe).__name__}")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int):
        raise ValueError(f"checkpoint_every must be a positive int; got {checkpoint_every!r}")
    if checkpoint_every < 1 or (devices is not None and devices < 1):
        raise ValueError(
            f"checkpoint_every and devices must be >= 1; got {checkpoint_every}, {devices}"
        )
    workdir = pathlib.Path(workdir)
    if name == "dax":
        return _run_dax(recipe, target, workdir)
    mesh = None
    if devices:
        from fastxai_jax.train.sharding import data_mesh

        mesh = data_mesh(devices)
    run = {"checkpoint_every": checkpoint_every, "mesh": mesh, "progress": progress}
    if name == "fex":
        return _train_fex(recipe, target, workdir, run)
    return _train_peer(name, recipe, target, workdir, run, target_name)


def train_or_load(
    name: str,
    target: Target,
    run_dir: pathlib.Path,
    *,
    recipe: LearnedRecipe | Mapping[str, Any] | None = None,
    seed: int,
    target_workdir: pathlib.Path | None = None,
    progress: bool,
) -> tuple[Callable[..., Any], float]:
    """Trains (or reloads) one learned explainer with a recipe.

    Args:
      name: ``fex``, ``ltx``, ``tve`` or ``fastshap``.
      target: ``(module, variables, family, apply_fn)`` of the target.
      run_dir: the explainer's directory (reused if it holds a trained explainer).
      recipe: a :class:`LearnedRecipe` or its fields (see :mod:`fastxai_jax.configs.demo`).
      seed: training seed (replaces the recipe's).
      target_workdir: unused (the target is given); kept for callers.
      progress: show progress bars.

    Returns:
      ``(explain(x, target) -> [B, H, W], train_seconds)``. FEX explains the class
      asked for; LTX, TVE and FastSHAP their own choice (as the demo always did).
    """
    from fastxai_jax.explainers.learned import runs

    del target_workdir
    if recipe is None or isinstance(recipe, Mapping):
        recipe = LearnedRecipe(**dict(recipe or {}))
    recipe = recipe.replace(seed=seed)
    start = time.perf_counter()
    if not (run_dir / "explainer").exists():
        train_explainer(name, target, run_dir, recipe, progress=progress)
    seconds = time.perf_counter() - start
    module, variables, _, apply_fn = target
    trained = runs.load(run_dir, apply_fn=apply_fn, target_params=variables, module=module)
    if name == "fex":
        return (lambda x, t: trained.explain(x, t)), seconds
    return (lambda x, t: trained.explain(x)), seconds
