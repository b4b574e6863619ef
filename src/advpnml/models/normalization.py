"""Per-channel normalization as a model's first layer, so attacks and the defense work in pixel space."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the identity when ``mean`` and ``std`` are None.

    The buffers are not persistent: state dicts keep the key names of the original
    architectures (so external checkpoints load unchanged) and the normalization is recorded
    in the checkpoint's metadata instead.
    """

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError(f"normalization needs both mean and std or neither, got mean={mean!r}, std={std!r}")
        self.mean_values = None if mean is None else tuple(float(m) for m in mean)
        self.std_values = None if std is None else tuple(float(s) for s in std)
        if self.std_values is not None and self.mean_values is not None:
            if len(self.std_values) != len(self.mean_values) or min(self.std_values) <= 0:
                raise ValueError(f"std must be positive and as long as mean, got mean={mean!r}, std={std!r}")
            shape = (1, len(self.mean_values), 1, 1)
            self.register_buffer("mean", torch.tensor(self.mean_values).view(shape), persistent=False)
            self.register_buffer("std", torch.tensor(self.std_values).view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel, or ``x`` unchanged."""
        if self.mean_values is None:
            return x
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        return (x - mean) / std

    def extra_repr(self) -> str:
        """The mean and std, for ``print(model)``."""
        return f"mean={self.mean_values}, std={self.std_values}"


class Normalized(nn.Module):
    """``model(normalize(x))``: a model that expects normalized inputs, made to take inputs in [0, 1] (the
    torchattacks/RobustBench convention the attacks and the defense assume)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    @property
    def advpnml_architecture(self) -> str:
        """What a records header names: the wrapped model's class, normalized."""
        return f"{type(self.model).__module__}.{type(self.model).__qualname__} (normalized)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's logits of ``x`` normalized."""
        if self.normalize.mean_values is not None and x.dim() == 4 and x.shape[1] != len(self.normalize.mean_values):
            raise ValueError(f"normalize has {len(self.normalize.mean_values)} channels but the inputs have {x.shape[1]}")
        return self.model(self.normalize(x))
