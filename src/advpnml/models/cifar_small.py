"""Small robust CIFAR-10 networks whose public checkpoints we evaluate (see ../shared/data/README.md).

- ``resnet4b``: alpha-beta-CROWN's ResNet-4B (PGD-trained at eps 2/255): no batch norm, biased convs,
  two stages of two residual blocks, then a 512 -> 100 -> C head.
- ``convex_small``: Wong & Kolter's small CNN from convex_adversarial (certified training at 8/255):
  conv 4x4/2 (16) -> conv 4x4/2 (32) -> FC 100 -> FC C, stored as an ``nn.Sequential`` (keys 0, 2, 5, 7).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .normalization import Normalize
from .registry import register_model


class _ResidualBlock(nn.Module):
    """ReLU(conv(ReLU(conv(x))) + shortcut(x)); the shortcut is a 1x1 conv when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class ResNet4b(nn.Module):
    """alpha-beta-CROWN's ``resnet4b()`` for 3x32x32 inputs (keys ``conv1, layer1, layer2, linear1, linear2``)."""

    def __init__(
        self,
        num_classes: int = 10,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.layer1 = nn.Sequential(_ResidualBlock(16, 32, 2), _ResidualBlock(32, 32, 1))
        self.layer2 = nn.Sequential(_ResidualBlock(32, 32, 2), _ResidualBlock(32, 32, 1))
        self.linear1 = nn.Linear(32 * 4 * 4, 100)
        self.linear2 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (inputs in [0, 1], normalized inside)."""
        x = self.layer2(self.layer1(F.relu(self.conv1(self.normalize(x)))))
        return self.linear2(F.relu(self.linear1(x.flatten(1))))


class ConvexSmall(nn.Module):
    """convex_adversarial's ``cifar_model()``; its layers sit under ``layers.`` in the original numbering."""

    def __init__(
        self,
        num_classes: int = 10,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.layers = nn.Sequential(
            nn.Conv2d(3, 16, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 8 * 8, 100),
            nn.ReLU(),
            nn.Linear(100, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (inputs in [0, 1], normalized inside)."""
        return self.layers(self.normalize(x))


@register_model("resnet4b", description="alpha-beta-CROWN ResNet-4B, CIFAR-10 (shared robust checkpoint)", num_classes=10)
def resnet4b(**kwargs) -> ResNet4b:
    """alpha-beta-CROWN's ResNet-4B for CIFAR-10."""
    return ResNet4b(**kwargs)


@register_model("convex_small", description="convex_adversarial small CIFAR-10 CNN (shared certified checkpoint)", num_classes=10)
def convex_small(**kwargs) -> ConvexSmall:
    """convex_adversarial's small CIFAR-10 CNN."""
    return ConvexSmall(**kwargs)
