"""The dataset type every loader returns: labelled samples plus what a model needs to know about them."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class DatasetInfo:
    """name, number of classes, shape of one input, input bounds (None: unbounded), class names."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    bounds: tuple[float, float] | None = (0.0, 1.0)
    classes: tuple[str, ...] | None = None


def dataset_bounds(dataset: Dataset) -> tuple[float, float] | None:
    """The input bounds a dataset declares in its ``.info``; ``(0, 1)`` for a plain dataset without one."""
    return getattr(getattr(dataset, "info", None), "bounds", (0.0, 1.0))


class LabeledTensors(Dataset):
    """An in-memory dataset: inputs ``x`` (N, ...) as float32 and labels ``y`` (N,) as int64."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, info: DatasetInfo) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
        self.x = x
        self.y = y.long()
        self.info = info

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def head(self, n: int | None) -> "LabeledTensors":
        """The first ``n`` samples (all when ``n`` is None); the splits are pre-shuffled, so classes mix."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"number of samples must be >= 1, got {n}")
        return LabeledTensors(self.x[:n], self.y[:n], self.info)

    def __repr__(self) -> str:
        return f"LabeledTensors({self.info.name}, n={len(self)}, shape={tuple(self.x.shape[1:])})"
