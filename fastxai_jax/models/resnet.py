"""ResNet-18/34/50/101/152 in torchvision's layout (He et al., 2016; v1.5
Bottleneck with the stride on the 3x3 convolution).

Submodule names follow torchvision's (``layer1_0/conv1`` for
``layer1.0.conv1``) so that :mod:`fastxai_jax.models.convert` maps weights by
name. ``__call__(x, train=False)`` takes a normalised NHWC batch and returns
``(logits, aux)`` with ``aux["features"]["layer1".."layer4"]`` (each also
passed through ``self.perturb`` for Grad-CAM; see :func:`tap`) and ``aux["pre_logits"]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fastxai_jax.models.pooling import max_pool

# torchvision: BatchNorm2d(eps=1e-5, momentum=0.1) == flax momentum 0.9.
BN_EPS = 1e-5

RESNET_STAGES: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def conv(features: int, kernel: int, stride: int = 1, name: str | None = None, **kw) -> nn.Conv:
    """A bias-free conv with torch's symmetric ``kernel // 2`` padding."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=kw.pop("use_bias", False),
        name=name,
        **kw,
    )


def tap(module: nn.Module, name: str, x: jnp.ndarray) -> jnp.ndarray:
    """``module.perturb(name, x)`` except during ``init``.

    ``init`` therefore returns no ``"perturbations"`` collection (whose zeros
    would be tied to the init batch size). Grad-CAM creates them for its own
    batch with :func:`fastxai_jax.models.init_perturbations` (an ``apply``
    with ``mutable=["perturbations"]``) and differentiates w.r.t. them.
    """
    return x if module.is_initializing() else module.perturb(name, x)


def batch_norm(train: bool, name: str, eps: float = BN_EPS) -> nn.BatchNorm:
    """BatchNorm using running statistics unless ``train``."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=eps, name=name)


class _Residual(nn.Module):
    """``relu(branch(x) + shortcut(x))``: the shortcut is the identity or, with
    ``downsample``, a strided 1x1 conv + BN to ``planes * expansion`` channels.
    Subclasses define the branch."""

    planes: int
    stride: int = 1
    downsample: bool = False
    expansion = 1

    def branch(self, x: jnp.ndarray, bn: Callable[[str], nn.BatchNorm]) -> jnp.ndarray:
        raise NotImplementedError

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        bn = functools.partial(batch_norm, train)
        y = self.branch(x, bn)
        if self.downsample:
            features = self.planes * self.expansion
            x = bn("downsample_bn")(conv(features, 1, self.stride, "downsample_conv")(x))
        return nn.relu(y + x)


class BasicBlock(_Residual):
    """Two 3x3 convs with an identity or 1x1-projection shortcut."""

    expansion = 1

    def branch(self, x: jnp.ndarray, bn: Callable[[str], nn.BatchNorm]) -> jnp.ndarray:
        y = nn.relu(bn("bn1")(conv(self.planes, 3, self.stride, "conv1")(x)))
        return bn("bn2")(conv(self.planes, 3, 1, "conv2")(y))


class Bottleneck(_Residual):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4), with shortcut."""

    expansion = 4

    def branch(self, x: jnp.ndarray, bn: Callable[[str], nn.BatchNorm]) -> jnp.ndarray:
        y = nn.relu(bn("bn1")(conv(self.planes, 1, 1, "conv1")(x)))
        y = nn.relu(bn("bn2")(conv(self.planes, 3, self.stride, "conv2")(y)))
        return bn("bn3")(conv(self.planes * self.expansion, 1, 1, "conv3")(y))


class ResNet(nn.Module):
    """torchvision ResNet.

    Attributes:
      stage_sizes: blocks per stage, e.g. ``(3, 4, 6, 3)``.
      block: ``"basic"`` or ``"bottleneck"``.
      num_classes: size of the ``fc`` layer.
      width: stem channels (torchvision: 64); stage ``s`` has ``width·2^s`` planes.
    """

    stage_sizes: Sequence[int]
    block: str = "bottleneck"
    num_classes: int = 1000
    width: int = 64

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        """Args: x: [B, H, W, 3] normalised. Returns (logits [B, K], aux)."""
        block_cls = Bottleneck if self.block == "bottleneck" else BasicBlock
        x = conv(self.width, 7, 2, "conv1")(x)
        x = nn.relu(batch_norm(train, "bn1")(x))
        x = max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        features = {}
        in_planes = self.width
        for stage, num_blocks in enumerate(self.stage_sizes):
            planes = self.width * 2**stage
            for index in range(num_blocks):
                stride = 2 if (stage > 0 and index == 0) else 1
                needs_projection = index == 0 and (
                    stride != 1 or in_planes != planes * block_cls.expansion
                )
                x = block_cls(planes, stride, needs_projection, name=f"layer{stage + 1}_{index}")(
                    x, train
                )
                in_planes = planes * block_cls.expansion
            name = f"layer{stage + 1}"
            x = tap(self, name, x)
            features[name] = x
        pooled = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, name="fc")(pooled)
        return logits, {"features": features, "pre_logits": pooled}


def resnet(depth: int, num_classes: int = 1000) -> ResNet:
    """ResNet-``depth`` for depth in {18, 34, 50, 101, 152}."""
    if depth not in RESNET_STAGES:
        raise ValueError(f"depth must be one of {sorted(RESNET_STAGES)}; got {depth!r}")
    block, stages = RESNET_STAGES[depth]
    return ResNet(stage_sizes=stages, block=block, num_classes=num_classes)
