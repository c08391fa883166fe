"""Where a target model comes from, for the CLI verbs and scripts: torch/safetensors
weights, a fastxai params file (:func:`fastxai_jax.train.checkpoint.save_params`),
the small CNN of a workdir (trained there when empty,
:func:`fastxai_jax.train.target.load_or_train_target`), or a random initialisation
(smoke runs)."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

TORCH_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def saved_target_options(
    workdir, *, target_seed: int | None = None, flag: str = "--workdir", **requested: Any
) -> tuple[int, dict[str, Any]]:
    """``(seed, options)`` for ``load_or_train_target(workdir, ...)``, checked before compute.

    A workdir holding a finished target gives the seed and options it was saved
    with (so a target trained with non-default options, e.g. the demo's, loads);
    an explicit ``target_seed`` or ``requested`` option (``None``: not given) that
    contradicts them is refused. An empty workdir gives ``target_seed`` (0 when
    ``None``) and ``requested``; it must be a writable directory. ``flag`` names
    the workdir in errors.

    Raises:
      ValueError: a requested option differs from the saved target's.
      NotADirectoryError, PermissionError: ``workdir`` is a file or read-only.
    """
    from fastxai_jax.train.checkpoint import Checkpointer
    from fastxai_jax.train.target import DEFAULTS, OPTIONAL, check_workdir

    requested = {name: value for name, value in requested.items() if value is not None}
    path, config = pathlib.Path(workdir), None
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{flag} {path} exists and is not a directory")
    if (path / "params").is_dir():
        with Checkpointer(path / "params", max_to_keep=1) as ckpt:
            if ckpt.latest_step() is not None:
                saved = ckpt.restore_config()
                config = (saved.get("config") if isinstance(saved, dict) else None) or {}
    if config is None:
        check_workdir(path, flag)
        return (0 if target_seed is None else int(target_seed)), requested
    seed = int(config.get("seed", 0))
    options = {name: config[name] for name in (*DEFAULTS, *OPTIONAL) if name in config}
    if target_seed is not None and int(target_seed) != seed:
        raise ValueError(
            f"--target-seed {target_seed}: {flag} {path} holds a target trained with seed "
            f"{seed}; drop --target-seed or pass another {flag}"
        )
    for name, value in requested.items():
        if options.get(name, {**DEFAULTS, **OPTIONAL}.get(name)) != value:
            raise ValueError(
                f"{name}={value!r}: {flag} {path} holds a target trained with "
                f"{name}={options.get(name)!r}; drop it or pass another {flag}"
            )
    return seed, options


def load_workdir_target(
    workdir, *, target_seed: int | None = None, progress: bool = True, flag: str = "--workdir"
) -> tuple[Any, Any, str]:
    """``(module, variables, family)`` of the small CNN in ``workdir``, trained there
    first when it holds none (seed and options checked by :func:`saved_target_options`)."""
    from fastxai_jax.train import target

    seed, options = saved_target_options(workdir, target_seed=target_seed, flag=flag)
    return target.load_or_train_target(workdir, seed=seed, progress=progress, **options)


def load_params_target(
    model: str,
    path: str | os.PathLike,
    *,
    image_size: int,
    num_classes: int | None = None,
    default_num_classes: int | None = None,
    flag: str = "--weights",
) -> tuple[Any, Any, str]:
    """``(module, variables, family)`` of zoo ``model`` with the params saved in ``path``.

    Args:
      model: a zoo name (:func:`fastxai_jax.models.build`).
      path: a params directory of :func:`fastxai_jax.train.checkpoint.save_params`.
      image_size: the input side the params template is built at.
      num_classes: the head's classes (default: the ones the file records, else
        ``default_num_classes``).
      default_num_classes: classes when neither is given (``None``: refuse).
      flag: how errors name ``path``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: the number of classes is unknown.
    """
    from fastxai_jax.models import build
    from fastxai_jax.train.checkpoint import load_params

    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path} does not exist")
    _, saved = load_params(path)
    saved = saved if isinstance(saved, dict) else {}
    recorded = saved.get("num_classes") or (saved.get("config") or {}).get("num_classes")
    num_classes = num_classes or recorded or default_num_classes
    if num_classes is None:
        raise ValueError(f"{flag} {path} records no num_classes: pass --num-classes")
    module, family = build(model, num_classes=int(num_classes))
    sample = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    template = jax.eval_shape(lambda: module.init(jax.random.key(0), sample, train=False))
    variables, _ = load_params(path, template)
    return module, variables, family


def default_image_size(model: str) -> int:
    """The input side of zoo ``model`` (224 for a model without a fixed one)."""
    from fastxai_jax.models.zoo import MODEL_ZOO

    info = MODEL_ZOO.get(model)
    if info is None or "x" not in info.input_size:
        return 224
    return int(info.input_size.split("x")[0])


def init_target(model: str, num_classes: int, image_size: int, seed: int) -> tuple[Any, Any, str]:
    """``(module, variables, family)`` of zoo ``model``, randomly initialised (compiled
    ``module.init`` at ``jax.random.key(seed)`` on a ``[1, image_size, image_size, 3]`` sample)."""
    from fastxai_jax.models import build

    module, family = build(model, num_classes=num_classes)
    sample = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    init = jax.jit(lambda key, xs: module.init(key, xs, train=False))
    return module, init(jax.random.key(seed), sample), family


def load_zoo_target(
    model: str,
    *,
    image_size: int,
    weights: str | os.PathLike | None = None,
    workdir: str | os.PathLike = "runs/target",
    untrained: bool = False,
    num_classes: int | None = None,
    seed: int = 0,
    target_seed: int | None = None,
) -> tuple[Any, Any, str]:
    """``(module, variables, family)`` of the target ``model``, chosen in this order:

    ``weights`` ending in a torch suffix (:data:`TORCH_SUFFIXES`) are converted by
    :func:`fastxai_jax.models.load_pretrained`; other ``weights`` are a params
    directory (:func:`load_params_target`); the
    ``small_cnn`` without ``untrained`` is the one in ``workdir`` (trained there
    when it holds none, with ``target_seed``); ``untrained`` gives
    :func:`init_target` at ``seed`` with ``num_classes`` (default: the
    ground-truth benchmark's).

    Raises:
      ValueError: a model other than ``small_cnn`` with neither ``weights`` nor
        ``untrained``.
    """
    from fastxai_jax.models import build, load_pretrained

    weights = None if weights is None else str(weights)
    if weights and weights.endswith(TORCH_SUFFIXES):
        module, variables = load_pretrained(model, weights, num_classes=num_classes)
        return module, variables, build(model, num_classes=module.num_classes)[1]
    if weights:
        return load_params_target(model, weights, image_size=image_size, num_classes=num_classes)
    if model == "small_cnn" and not untrained:
        return load_workdir_target(workdir, target_seed=target_seed)
    if not untrained:
        raise ValueError(f"--model {model!r} needs --weights (or --untrained for a smoke run)")
    if num_classes is None:
        from fastxai_jax.data.groundtruth import NUM_CLASSES

        num_classes = NUM_CLASSES
    return init_target(model, num_classes, image_size, seed)
