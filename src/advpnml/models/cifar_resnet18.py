"""The CIFAR-10 ResNet-18 of Kuang Liu's pytorch-cifar, the architecture AutoAttack's example checkpoint uses.

Unlike ImageNet ResNets it keeps 32x32 resolution in its 3x3 stem (no max-pool) and ends in a 4x4
average pool. Keys: ``conv1, bn1, layer1..layer4`` (blocks with ``conv1, bn1, conv2, bn2, shortcut``), ``linear``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .normalization import Normalize
from .registry import register_model


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs; ``width`` is the first stage's channel count (64 in the original)."""

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 64,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, in_planes = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2**i
            stages.append(nn.Sequential(_BasicBlock(in_planes, planes, stride), _BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (inputs in [0, 1], normalized inside)."""
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model(
    "resnet18_cifar", description="CIFAR-10 ResNet-18 (pytorch-cifar; AutoAttack's example model)", num_classes=10, width=64
)
def resnet18_cifar(**kwargs) -> CifarResNet18:
    """A CIFAR-10 ResNet-18 (pytorch-cifar's, AutoAttack's example model)."""
    return CifarResNet18(**kwargs)
