"""Max pooling whose backward pass is cheap on every backend.

``flax.linen.max_pool`` lowers to ``lax.reduce_window``; its gradient is a
``select_and_scatter``, which XLA:CPU runs slowly — on the benchmark's small CNN it
is ~45% of a jitted input-gradient and doubles every gradient method's cost. This
:func:`max_pool` computes the same forward values with reshapes (windows equal to
strides) or a max over the window's strided slices (overlapping windows, e.g.
ResNet's 3×3/2 stem), whose gradients are elementwise selects.

Where a window holds several equal maxima the whole gradient goes to the first
of them in row-major window order, as torch's ``max_pool2d`` (and
``select_and_scatter``) route it. Ties are common: a flat image region gives
equal positive activations after a BN→ReLU stem, so splitting them evenly
changes input gradients there (by up to 35% of the map's maximum on
scikit-image's ``astronaut``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _pairs(value: int | Sequence[int], name: str) -> tuple[int, int]:
    value = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"{name} must be a positive int or a pair; got {value!r}")
    return value  # type: ignore[return-value]


def max_pool(
    x: jnp.ndarray,
    window: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: str | Sequence[tuple[int, int]] = "VALID",
) -> jnp.ndarray:
    """2-D max pooling over ``x [B, H, W, C]``, as ``flax.linen.max_pool``.

    Args:
      x: ``[B, H, W, C]``.
      window: window size (int or ``(h, w)``).
      strides: stride (default: ``window``).
      padding: ``"VALID"``, ``"SAME"`` or ``((top, bottom), (left, right))``; padded
        cells hold ``-inf`` and never win.

    Returns:
      ``[B, H', W', C]`` pooled values, identical to ``flax.linen.max_pool``.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [B, H, W, C]; got shape {x.shape}")
    wh, ww = _pairs(window, "window")
    sh, sw = _pairs(window if strides is None else strides, "strides")
    height, width = x.shape[1], x.shape[2]
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            pads = ((0, 0), (0, 0))
        elif mode == "SAME":
            pads = []
            for size, w, s in ((height, wh, sh), (width, ww, sw)):
                out = -(-size // s)
                total = max((out - 1) * s + w - size, 0)
                pads.append((total // 2, total - total // 2))
            pads = tuple(pads)
        else:
            raise ValueError(f"padding must be 'VALID', 'SAME' or pairs; got {padding!r}")
    else:
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
        if len(pads) != 2:
            raise ValueError(f"padding must give (lo, hi) for H and W; got {padding!r}")
    if any(p != (0, 0) for p in pads):
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
        height, width = x.shape[1], x.shape[2]
    out_h, out_w = (height - wh) // sh + 1, (width - ww) // sw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"window {(wh, ww)} is larger than the (padded) input {height}×{width}")
    if (wh, ww) == (sh, sw):
        x = x[:, : out_h * sh, : out_w * sw]
        blocks = x.reshape(x.shape[0], out_h, sh, out_w, sw, x.shape[3])
        stacked = jnp.moveaxis(blocks, (2, 4), (0, 1)).reshape(
            sh * sw, *blocks.shape[:2], out_w, x.shape[3]
        )
    else:
        stacked = jnp.stack(
            [
                x[:, i : i + (out_h - 1) * sh + 1 : sh, j : j + (out_w - 1) * sw + 1 : sw]
                for i in range(wh)
                for j in range(ww)
            ],
            axis=0,
        )
    return _first_max(stacked)


def _first_max(stacked: jnp.ndarray) -> jnp.ndarray:
    """Max over axis 0 whose gradient goes to the first maximum (torch's rule).

    The window cells are stacked in row-major order, so ``argmax`` (first
    occurrence) picks the cell torch's ``max_pool2d`` records; a ``where`` on that
    one-hot selection makes the backward pass an elementwise select.
    """
    index = jax.lax.stop_gradient(jnp.argmax(stacked, axis=0))
    cells = jnp.arange(stacked.shape[0]).reshape((-1,) + (1,) * (stacked.ndim - 1))
    return jnp.sum(jnp.where(cells == index[None], stacked, 0.0), axis=0)


__all__ = ["max_pool"]
