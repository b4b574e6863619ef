"""The paper's 2-D synthetic data (Sec. 4.2): label 0 ~ N(0, 0.01 I), label 1 ~ N(M, 0.01 I), M uniform on a circle of radius 2."""

from __future__ import annotations

import math

import torch

from .dataset import DatasetInfo, LabeledTensors

TOY2D_INFO = DatasetInfo("toy2d", num_classes=2, input_shape=(2,), bounds=None, classes=("center", "ring"))
_SPLIT_SEEDS = {"train": 0, "test": 1}


def toy2d(split: str = "train", n: int = 1000, seed: int | None = None, radius: float = 2.0, std: float = 0.1) -> LabeledTensors:
    """``n`` points, half per class, shuffled; each split has its own default seed so train and test differ."""
    if split not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r} for toy2d; expected 'train' or 'test'")
    if n < 2:
        raise ValueError(f"toy2d needs n >= 2 samples, got {n}")
    gen = torch.Generator().manual_seed(_SPLIT_SEEDS[split] if seed is None else seed)
    n1 = n // 2
    n0 = n - n1
    angle = torch.rand(n1, generator=gen) * 2 * math.pi
    centers = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    x = torch.cat([std * torch.randn(n0, 2, generator=gen), centers + std * torch.randn(n1, 2, generator=gen)])
    y = torch.cat([torch.zeros(n0, dtype=torch.long), torch.ones(n1, dtype=torch.long)])
    order = torch.randperm(n, generator=gen)
    return LabeledTensors(x[order], y[order], TOY2D_INFO)
