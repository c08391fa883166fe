"""Training FEX with the shared loop, saving it, and loading it back to explain.

Layout of a FEX ``workdir``::

  checkpoints/      fit's resumable checkpoints (orbax; resumed automatically)
  train_log.jsonl   one JSON record of metrics per step
  explainer/        the final params + config (``save_params``), read by
                    :func:`load_explainer`
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.core import ApplyFn, Params, check_images
from fastxai_jax.explainers.fex import FexConfig, explain_grid, init_params, make, upsample
from fastxai_jax.train.checkpoint import load_params, save_params
from fastxai_jax.train.loop import fit

# Settings found for the 64x64 embedded benchmark (use batch_size=16, ~700 steps):
# a 2-layer D=64 ViT on a 16x16 patch grid (patch 4), K=5, Adam 1e-3 with warm-up +
# cosine, entropy bonus 1e-2 (the authors' 1e-4 lets the policy collapse faster; 5e-2
# spreads it over the background), the "empty" reward baseline. Measured on 64
# held-out images against the demo target: patch 4 + empty baseline → pointing game
# 1.00, deletion AUC 0.143 (RISE-4000: 1.00 / 0.134); patch 8 → 0.92 / 0.149.
BENCHMARK_DEFAULTS: dict[str, Any] = dict(
    image_size=64,
    patch_size=4,
    vit_preset="vit_ti16",
    hidden_size=64,
    depth=2,
    num_heads=4,
    mlp_dim=128,
    explainer_family="half",
    num_masks=5,
    loss="ppo",
    entropy_coef=1e-2,
    learning_rate=1e-3,
    warmup_frac=0.05,
    clip_norm=1.0,
    # The benchmark target predicts classes 2/3/6 on a blank image (p ≈ 0.3): with
    # the paper's reward, dropping every patch "explains" those classes.
    reward_baseline="empty",
)


def benchmark_config(num_classes: int, steps: int, **overrides: Any) -> FexConfig:
    """:class:`FexConfig` with :data:`BENCHMARK_DEFAULTS` (cosine schedule over ``steps``)."""
    options = {**BENCHMARK_DEFAULTS, "total_steps": int(steps), **overrides}
    return FexConfig(num_classes=num_classes, **options)


def _batch_fn(images: np.ndarray, batch_size: int, seed: int) -> Callable[[int], np.ndarray]:
    """Deterministic in ``step``: one permutation per epoch plus random flips."""
    num = images.shape[0]
    per_epoch = max(num // batch_size, 1)

    def batch_fn(step: int) -> np.ndarray:
        epoch, offset = divmod(int(step), per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(num)
        index = order[offset * batch_size : (offset + 1) * batch_size]
        if index.size < batch_size:  # fewer images than one batch: wrap around
            index = np.resize(order, batch_size)
        batch = images[index]
        flips = np.random.default_rng([seed, epoch, offset, 1]).random((2, batch_size)) < 0.5
        batch = np.where(flips[0][:, None, None, None], batch[:, :, ::-1], batch)
        batch = np.where(flips[1][:, None, None, None], batch[:, ::-1], batch)
        return np.ascontiguousarray(batch, np.float32)

    return batch_fn


def train_fex_on_benchmark(
    target_apply_fn: ApplyFn,
    target_params: Params,
    images: Any,
    *,
    steps: int,
    batch_size: int,
    key: jax.Array,
    workdir: str | os.PathLike,
    target_family: str = "half",
    config: FexConfig | None = None,
    backbone_params: Params | None = None,
    checkpoint_every: int = 100,
    mesh: Any = None,
    progress: bool = True,
    data_seed: int = 0,
) -> Params:
    """Trains FEX on ``images`` with :func:`fastxai_jax.train.loop.fit`.

    Resumes from ``workdir/checkpoints`` when interrupted; writes
    ``workdir/train_log.jsonl`` and the final ``workdir/explainer``.

    Args:
      target_apply_fn: ``apply_fn(params, x01) -> logits [B, C]``.
      target_params: the target's params.
      images: ``[N, H, W, 3]`` training images in ``[0, 1]`` (labels unused: FEX
        explains the target's prediction).
      steps: total training steps.
      batch_size: images per step (each gets ``config.num_masks`` masks).
      key: PRNG key (init and per-step keys).
      workdir: run directory (see module docstring).
      target_family: the target's normalisation family (masking fill space).
      config: a full :class:`FexConfig`; default :func:`benchmark_config`.
      backbone_params: ViT params to initialise the explainer from.
      checkpoint_every: steps between checkpoints.
      mesh: optional ``train.sharding.data_mesh`` for data parallelism.
      progress: progress bar.
      data_seed: seed of the data order and flips.

    Returns:
      The trained explainer params (host arrays).
    """
    images = np.asarray(images, np.float32)
    check_images(images, "images")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    num_classes = int(jax.eval_shape(target_apply_fn, target_params, images[:1]).shape[-1])
    if config is None:
        config = benchmark_config(num_classes, steps, target_family=target_family)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    learned = make(config, target_apply_fn, target_params, backbone_params=backbone_params)
    init_key, train_key = jax.random.split(key)
    state = learned.init(init_key, images[: min(8, len(images))])
    run_config = {
        "method": "fex",
        "fex": dataclasses.asdict(config),
        "steps": steps,
        "batch_size": batch_size,
        "data_seed": data_seed,
    }
    state, _ = fit(
        state,
        learned.update,
        _batch_fn(images, batch_size, data_seed),
        num_steps=steps,
        key=train_key,
        checkpoint_dir=workdir / "checkpoints",
        checkpoint_every=checkpoint_every,
        log_path=workdir / "train_log.jsonl",
        mesh=mesh,
        progress=progress,
        config=run_config,
    )
    params = jax.device_get(state.params)
    save_params(workdir / "explainer", params, run_config)
    return params


def load(workdir: str | os.PathLike) -> tuple[FexConfig, Params]:
    """Reads ``(config, params)`` saved by :func:`train_fex_on_benchmark`.

    Raises:
      FileNotFoundError: no ``workdir/explainer``.
      ValueError: the saved run is not a FEX run or does not match its config.
    """
    path = pathlib.Path(workdir) / "explainer"
    if not path.exists():
        raise FileNotFoundError(f"no trained FEX explainer in {path} (run train-explainer first)")
    _, saved = load_params(path)
    if not isinstance(saved, dict) or saved.get("method") != "fex":
        raise ValueError(f"{path} does not hold a FEX explainer (config {saved!r})")
    config = FexConfig(**saved["fex"])
    template = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    params, _ = load_params(path, template=template)
    return config, jax.tree.map(jnp.asarray, params)


def load_explainer(
    workdir: str | os.PathLike, *, upsample_method: str | None = "bilinear"
) -> Callable[..., jax.Array]:
    """``explain(x, target=None)`` for a FEX run saved in ``workdir``.

    Args:
      workdir: a directory written by :func:`train_fex_on_benchmark` / the CLI.
      upsample_method: ``"bilinear"`` or ``"nearest"`` → ``[B, H, W]`` maps;
        ``None`` → the ``[B, gh, gw]`` patch grid.

    Returns:
      ``explain(x [B, H, W, 3] in [0, 1], target=None | int | [B]) -> map``; one
      jitted explainer forward, no target query (``target=None`` explains the
      explainer's own predicted class, see :func:`fex.explain_grid`).
    """
    config, params = load(workdir)
    learned_explain = make(config, _no_target, None).explain
    size = (config.image_size, config.image_size)

    def explain(x: Any, target: Any = None) -> jax.Array:
        heat = learned_explain(params, jnp.asarray(x, jnp.float32), target)
        return heat if upsample_method is None else upsample(heat, size, upsample_method)

    return explain


def _no_target(params: Params, x: jax.Array) -> jax.Array:
    raise RuntimeError("FEX explain must not query the target model")


__all__ = [
    "BENCHMARK_DEFAULTS",
    "benchmark_config",
    "explain_grid",
    "load",
    "load_explainer",
    "train_fex_on_benchmark",
]
