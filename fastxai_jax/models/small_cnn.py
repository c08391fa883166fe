"""A small ReLU CNN for the embedded 64x64 planted-object benchmark.

Four 3x3 convolutions (2x2 max pool after the first three), global average
pooling and a dense head; no normalisation layers, so it trains quickly on
CPU and its variables are ``{"params"}`` only. ``aux["features"]["conv_last"]``
is the last conv's ReLU output (8x8 for 64x64 input), passed through
``self.perturb`` for Grad-CAM.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from fastxai_jax.models.pooling import max_pool
from fastxai_jax.models.resnet import tap


class SmallCNN(nn.Module):
    """Attributes: num_classes; widths: channels of the four convs."""

    num_classes: int = 10
    widths: Sequence[int] = (16, 32, 64, 64)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        """Args: x: [B, H, W, C] normalised. Returns (logits [B, K], aux)."""
        del train
        if len(self.widths) < 1:
            raise ValueError("widths must list at least one conv width")
        for i, width in enumerate(self.widths):
            x = nn.relu(nn.Conv(width, (3, 3), padding="SAME", name=f"conv{i}")(x))
            if i < len(self.widths) - 1:
                x = max_pool(x, (2, 2), strides=(2, 2))
        x = tap(self, "conv_last", x)
        pooled = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, name="head")(pooled)
        return logits, {"features": {"conv_last": x}, "pre_logits": pooled}
