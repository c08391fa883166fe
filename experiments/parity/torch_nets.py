"""Torch twins of the Flax networks the parity references run on.

torchvision cannot be installed here, so this builds torchvision's ResNet
layout (He et al., 2016; BasicBlock, ``conv1``/``bn1``/``layer1.0``... key
names) directly in ``torch.nn``; a torchvision state dict loads into it with
``strict=True``. :func:`tiny_resnet` is the same architecture at width 8 with
one block per stage and a 64² input, small enough that its weights are
committed under ``tests/fixtures/parity/`` and the parity tests need nothing
from ``../shared``.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """torchvision's BasicBlock."""

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(y + x)


class ResNet(nn.Module):
    """torchvision ResNet with BasicBlocks, ``width`` channels in the stem."""

    def __init__(self, blocks=(2, 2, 2, 2), num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = width
        for stage, n in enumerate(blocks):
            planes = width * 2**stage
            layers = []
            for i in range(n):
                layers.append(BasicBlock(cin, planes, 2 if (stage > 0 and i == 0) else 1))
                cin = planes
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(4):
            x = getattr(self, f"layer{stage + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Normalize(nn.Module):
    """``(x - mean) / std`` over NCHW channels (ImageNet constants)."""

    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def tiny_resnet(seed: int = 0, num_classes: int = 10) -> ResNet:
    """Width-8, one-block-per-stage ResNet with randomised BN (eval mode)."""
    torch.manual_seed(seed)
    net = ResNet(blocks=(1, 1, 1, 1), num_classes=num_classes, width=8)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()
