"""Depthwise convolution as a sum of shifted, strided slices.

XLA:CPU lowers a depthwise convolution (``feature_group_count == channels``)
to a generic grouped convolution whose forward and, above all, input gradient
are slow: on 2 cores, EfficientNet-Lite0's depthwise layers take 10-50x
longer than the same arithmetic written as ``k·k`` multiply-adds of shifted
slices, which XLA fuses into one elementwise loop (and whose gradient is pads
and multiplies). :func:`depthwise_conv` computes the same values that way;
:class:`DepthwiseConv` is a drop-in for ``flax.linen.Conv(C, (k, k),
feature_group_count=C)`` with the same ``kernel`` (``[kh, kw, 1, C]``) and
``bias`` parameters, so checkpoints and weight converters are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["DepthwiseConv", "depthwise_conv"]


def depthwise_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int] = (1, 1),
    padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0)),
) -> jax.Array:
    """``y[b, i, j, c] = Σ_{u,v} x_pad[b, s·i + u, s·j + v, c] · kernel[u, v, 0, c]``.

    Args:
      x: ``[B, H, W, C]``.
      kernel: ``[kh, kw, 1, C]`` (flax's grouped-conv layout).
      strides: ``(sh, sw)``.
      padding: explicit zero padding ``((top, bottom), (left, right))``.

    Returns:
      ``[B, H', W', C]`` with ``H' = (H + top + bottom − kh) // sh + 1`` (same for W),
      equal to ``lax.conv_general_dilated(..., feature_group_count=C)``.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [B, H, W, C]; got shape {x.shape}")
    kh, kw, one, channels = kernel.shape
    if one != 1 or channels != x.shape[-1]:
        raise ValueError(
            f"kernel must be [kh, kw, 1, C={x.shape[-1]}] for a depthwise conv; "
            f"got shape {kernel.shape}"
        )
    (top, bottom), (left, right) = (tuple(p) for p in padding)
    sh, sw = (int(s) for s in strides)
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h = (xp.shape[1] - kh) // sh + 1
    out_w = (xp.shape[2] - kw) // sw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"kernel {kh}x{kw} is larger than the padded input {xp.shape[1:3]}")
    kernel = kernel.astype(jnp.result_type(x.dtype, kernel.dtype))
    out = None
    for u in range(kh):
        for v in range(kw):
            window = jax.lax.slice(
                xp,
                (0, u, v, 0),
                (xp.shape[0], u + sh * (out_h - 1) + 1, v + sw * (out_w - 1) + 1, channels),
                (1, sh, sw, 1),
            )
            term = window * kernel[u, v, 0].reshape(1, 1, 1, channels)
            out = term if out is None else out + term
    return out


class DepthwiseConv(nn.Module):
    """``nn.Conv(C, kernel_size, strides, padding, feature_group_count=C)`` via
    :func:`depthwise_conv`.

    Attributes:
      kernel_size: ``(kh, kw)``.
      strides: ``(sh, sw)``.
      padding: explicit ``((top, bottom), (left, right))``.
      use_bias: add a per-channel bias.
    """

    kernel_size: Sequence[int]
    strides: Sequence[int] = (1, 1)
    padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0))
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kh, kw = self.kernel_size
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (kh, kw, 1, channels), jnp.float32
        )
        y = depthwise_conv(x, kernel, self.strides, self.padding)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
            y = y + bias.reshape(1, 1, 1, channels)
        return y
