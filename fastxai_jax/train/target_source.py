"""A target model for explaining images: torch/safetensors weights, a fastxai params
file, the small CNN of a workdir, or a random initialisation (smoke runs)."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

TORCH_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


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
    directory (:func:`fastxai_jax.train.saved_target.load_params_target`); the
    ``small_cnn`` without ``untrained`` is the one in ``workdir`` (trained there
    when it holds none, with ``target_seed``); ``untrained`` gives
    :func:`init_target` at ``seed`` with ``num_classes`` (default: the
    ground-truth benchmark's).

    Raises:
      ValueError: a model other than ``small_cnn`` with neither ``weights`` nor
        ``untrained``.
    """
    from fastxai_jax.models import build, load_pretrained
    from fastxai_jax.train import saved_target

    weights = None if weights is None else str(weights)
    if weights and weights.endswith(TORCH_SUFFIXES):
        module, variables = load_pretrained(model, weights, num_classes=num_classes)
        return module, variables, build(model, num_classes=module.num_classes)[1]
    if weights:
        return saved_target.load_params_target(
            model, weights, image_size=image_size, num_classes=num_classes
        )
    if model == "small_cnn" and not untrained:
        return saved_target.load_workdir_target(workdir, target_seed=target_seed)
    if not untrained:
        raise ValueError(f"--model {model!r} needs --weights (or --untrained for a smoke run)")
    if num_classes is None:
        from fastxai_jax.data.groundtruth import NUM_CLASSES

        num_classes = NUM_CLASSES
    return init_target(model, num_classes, image_size, seed)
