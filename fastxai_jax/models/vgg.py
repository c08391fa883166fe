"""VGG-16 (Simonyan & Zisserman, 2015) in torchvision's layout.

Submodules are named after torchvision's Sequential indices (``features_0``,
``classifier_6``). The adaptive average pooling to 7x7 reproduces torch's
``AdaptiveAvgPool2d`` for any input size, and the classifier flattens in
torch's channel-major (C, H, W) order so its weights are plain transposes.
``aux["features"]`` holds ``"conv5_3"`` (last ReLU, before the final pool)
and ``"features"`` (output of torchvision's ``features``, after the pool).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from fastxai_jax.models.pooling import max_pool
from fastxai_jax.models.resnet import tap

# torchvision cfg "D": channels, "M" = 2x2 max pool.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``[out, in]`` averaging weights of torch's AdaptiveAvgPool1d.

    Output ``i`` averages inputs ``floor(i*in/out) .. ceil((i+1)*in/out) - 1``.
    """
    weights = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


def adaptive_avg_pool(x: jnp.ndarray, output_size: tuple[int, int]) -> jnp.ndarray:
    """torch ``AdaptiveAvgPool2d`` on NHWC: ``[B, H, W, C] -> [B, oh, ow, C]``."""
    rows = jnp.asarray(adaptive_pool_matrix(x.shape[1], output_size[0]), x.dtype)
    cols = jnp.asarray(adaptive_pool_matrix(x.shape[2], output_size[1]), x.dtype)
    return jnp.einsum("oh,bhwc,pw->bopc", rows, x, cols)


class VGG16(nn.Module):
    """torchvision ``vgg16`` (no BatchNorm).

    Attributes:
      num_classes: size of the last classifier layer.
      dropout_rate: dropout in the classifier (active only when ``train``).
      classifier_width: hidden width of the classifier (torchvision: 4096).
    """

    num_classes: int = 1000
    dropout_rate: float = 0.5
    classifier_width: int = 4096

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        """Args: x: [B, H, W, 3] normalised (H, W >= 32). Returns (logits, aux)."""
        index = 0
        features = {}
        for item in VGG16_CFG:
            if item == "M":
                x = max_pool(x, (2, 2), strides=(2, 2))
                index += 1
            else:
                x = nn.Conv(item, (3, 3), padding=((1, 1), (1, 1)), name=f"features_{index}")(x)
                x = nn.relu(x)
                index += 2
            if index == 30:  # features.29 = last ReLU, before the final pool
                x = tap(self, "conv5_3", x)
                features["conv5_3"] = x
        x = tap(self, "features", x)
        features["features"] = x
        x = adaptive_avg_pool(x, (7, 7))
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # torch.flatten order
        for layer in (0, 3):
            x = nn.relu(nn.Dense(self.classifier_width, name=f"classifier_{layer}")(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        pre_logits = x
        logits = nn.Dense(self.num_classes, name="classifier_6")(x)
        return logits, {"features": features, "pre_logits": pre_logits}
