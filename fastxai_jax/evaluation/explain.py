"""Attribution maps for a batch of images, and their ``.npy`` / PNG / JSON outputs.

The library side of ``fastxai explain``: :func:`explain_images` runs an
``explain(x, target, key)`` of :func:`fastxai_jax.explainers.explain_fn.make_explain_fn`
over images in batches; :func:`save_maps` writes what it returns.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.core import ApplyFn, Params, resolve_target


def explain_images(
    explain: Callable[[jax.Array, jax.Array, Any], jax.Array],
    apply_fn: ApplyFn,
    params: Params,
    images: np.ndarray,
    *,
    key: jax.Array,
    batch_size: int,
    target: int | None = None,
    per_image_keys: bool = False,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Explains ``images`` batch by batch.

    Args:
      explain: ``explain(x [B, H, W, C], target [B], key) -> [B, H, W]``.
      apply_fn, params: the target, for the predicted class and ``target``'s check.
      images: ``[N, H, W, C]`` in [0, 1].
      key: the explanation key; batch ``start`` gets ``fold_in(key, start)``, or
        with ``per_image_keys`` one key per image index
        (:func:`fastxai_jax.explainers.rise.image_keys`), so that maps do not
        depend on ``batch_size``.
      batch_size: images per call (positive).
      target: the class explained (default: each image's predicted class).
      per_image_keys: see ``key`` (RISE-style methods).

    Returns:
      ``(maps [N, H, W], targets [N] int32, seconds)``, ``seconds`` being the time
      inside ``explain`` (compilation included).
    """
    from fastxai_jax.explainers.rise import image_keys

    images = np.asarray(images)
    if images.ndim != 4 or not len(images):
        raise ValueError(f"images must be a non-empty [N, H, W, C] array; got {images.shape}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    predict = jax.jit(lambda v, xs: jnp.argmax(apply_fn(v, xs), axis=-1).astype(jnp.int32))
    maps, targets, seconds = [], [], 0.0
    for start in range(0, len(images), batch_size):
        x = jnp.asarray(images[start : start + batch_size])
        if target is None:
            batch_target = predict(params, x)
        else:
            batch_target = resolve_target(apply_fn, params, x, target)
        tic = time.perf_counter()
        batch_key = (
            image_keys(key, start, x.shape[0]) if per_image_keys else jax.random.fold_in(key, start)
        )
        attribution = jax.block_until_ready(explain(x, batch_target, batch_key))
        seconds += time.perf_counter() - tic
        maps.append(np.asarray(attribution))
        targets.append(np.asarray(batch_target))
    return np.concatenate(maps), np.concatenate(targets), seconds


def save_maps(
    out: str | os.PathLike,
    names: Sequence[str],
    images: np.ndarray,
    maps: np.ndarray,
    targets: np.ndarray,
    summary: dict[str, Any],
    *,
    title: str = "",
    png: bool = True,
) -> pathlib.Path:
    """Writes ``attributions.npy``, ``NAME.npy`` (and ``NAME.png`` overlays titled
    ``"{title} · class C"`` when ``png``) per image, and ``summary.json``; returns ``out``."""
    from fastxai_jax.viz import save_overlay

    if not len(names) == len(images) == len(maps) == len(targets):
        raise ValueError(
            f"names, images, maps and targets must have one entry per image; got "
            f"{len(names)}, {len(images)}, {len(maps)}, {len(targets)}"
        )
    out = pathlib.Path(out)
    np.save(out / "attributions.npy", maps)
    for name, image, attribution, target in zip(names, images, maps, targets, strict=True):
        np.save(out / f"{name}.npy", attribution)
        if png:
            save_overlay(
                out / f"{name}.png", image, attribution, title=f"{title} · class {int(target)}"
            )
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return out
