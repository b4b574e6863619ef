"""Small MNIST convolutional networks: the Madry et al. CNN of the paper's text, the CNN of its official code,
and advertorch's LeNet-5."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .normalization import MNIST_MEAN, MNIST_STD, Normalize
from .registry import register_model


class MadryCNN(nn.Module):
    """Madry et al. (2018) MNIST network, as in the paper's appendix A.

    conv 5x5 (32) -> ReLU -> max-pool 2 -> conv 5x5 (64) -> ReLU -> max-pool 2 -> FC 1024 -> FC C.
    ``width`` scales the channel and hidden sizes (1.0 is the paper's network; smaller is for CPU tests).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        width: float = 1.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        c1, c2, hidden = (max(1, round(n * width)) for n in (32, 64, 1024))
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.fc1 = nn.Linear(c2 * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (inputs in [0, 1], normalized inside)."""
        x = F.max_pool2d(F.relu(self.conv1(self.normalize(x))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class LeNet5(nn.Module):
    """advertorch's MNIST LeNet-5 (keys ``conv1, conv2, linear1, linear2``), for its public checkpoints.

    conv 3x3 (32) -> ReLU -> max-pool 2 -> conv 3x3 (64) -> ReLU -> max-pool 2 -> FC 200 -> FC C.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.linear1 = nn.Linear(7 * 7 * 64, 200)
        self.linear2 = nn.Linear(200, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (inputs in [0, 1], normalized inside)."""
        x = F.max_pool2d(F.relu(self.conv1(self.normalize(x))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.linear2(F.relu(self.linear1(x.flatten(1))))


class OfficialMnistCNN(nn.Module):
    """The MNIST network of the paper's official code (``MNISTClassifier`` in uriyapes/pnml_adv), ~62K parameters.

    conv 5x5 (32, no padding) -> max-pool 2 -> ReLU -> conv 5x5 (64) -> max-pool 2 -> ReLU -> FC 1024 -> C:
    no hidden FC layer, unlike the Madry CNN the paper's appendix describes. The official code feeds it
    MNIST-standardized inputs, so the normalization sits inside by default.
    """

    def __init__(
        self,
        num_classes: int = 10,
        mean: Sequence[float] | None = MNIST_MEAN,
        std: Sequence[float] | None = MNIST_STD,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(1, 32, 5)
        self.conv2 = nn.Conv2d(32, 64, 5)
        self.fc1 = nn.Linear(64 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (inputs in [0, 1], normalized inside)."""
        x = F.relu(F.max_pool2d(self.conv1(self.normalize(x)), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return self.fc1(x.flatten(1))


@register_model("madry_cnn", description="Madry et al. MNIST CNN (paper, appendix A)", num_classes=10, width=1.0)
def madry_cnn(**kwargs) -> MadryCNN:
    """Madry et al.'s MNIST CNN (the paper's, appendix A)."""
    return MadryCNN(**kwargs)


@register_model("lenet5", description="advertorch MNIST LeNet-5 (shared robust checkpoint)", num_classes=10)
def lenet5(**kwargs) -> LeNet5:
    """advertorch's MNIST LeNet-5."""
    return LeNet5(**kwargs)


@register_model(
    "official_mnist_cnn",
    description="MNIST CNN of the paper's official code (pnml_adv MNISTClassifier)",
    num_classes=10,
    mean=MNIST_MEAN,
    std=MNIST_STD,
)
def official_mnist_cnn(**kwargs) -> OfficialMnistCNN:
    """The MNIST CNN of the paper's official code."""
    return OfficialMnistCNN(**kwargs)
