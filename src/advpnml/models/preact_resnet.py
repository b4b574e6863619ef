"""PreActResNet-18 (He et al. 2016), the CIFAR-10 model of fast adversarial training (Wong et al. 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .normalization import CIFAR10_MEAN, CIFAR10_STD, Normalize
from .registry import register_model


class PreActBlock(nn.Module):
    """A pre-activation residual block (BN-ReLU-conv, twice) with a 1x1 shortcut where shapes change."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output: its residual branch plus the shortcut."""
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class PreActResNet18(nn.Module):
    """Key names follow Wong et al.'s ``fast_adversarial`` repository (``layer1..4``, ``bn``, ``linear``)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        mean: Sequence[float] | None = CIFAR10_MEAN,
        std: Sequence[float] | None = CIFAR10_STD,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        planes = [width, 2 * width, 4 * width, 8 * width]
        in_planes = width
        layers = []
        for i, p in enumerate(planes):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(PreActBlock(in_planes, p, stride), PreActBlock(p, p, 1)))
            in_planes = p
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(planes[-1])
        self.linear = nn.Linear(planes[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (inputs in [0, 1], normalized inside)."""
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model(
    "preact_resnet18",
    description="PreActResNet-18 for CIFAR-10 (fast adversarial training)",
    num_classes=10,
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
)
def preact_resnet18(**kwargs) -> PreActResNet18:
    """A PreActResNet-18 for CIFAR-10 (fast adversarial training's model)."""
    return PreActResNet18(**kwargs)
