"""The dataset type every loader returns: labelled samples plus what a model needs to know about them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset, Subset


@dataclass(frozen=True)
class DatasetInfo:
    """name, number of classes, shape of one input, input bounds (None: unbounded), class names."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    bounds: tuple[float, float] | None = (0.0, 1.0)
    classes: tuple[str, ...] | None = None


class LabeledDataset(Protocol):
    """What every dataset the evaluation and training read is: ``(input, label)`` pairs, a length and an ``.info``
    (:class:`DatasetInfo`). :class:`LabeledTensors`, :class:`InfoSubset` and :class:`advpnml.data.user.DatasetView`
    are; a torch ``Dataset`` of the user's becomes one through :func:`advpnml.data.user.as_dataset`."""

    info: DatasetInfo

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class InfoSubset(Subset):
    """``Subset(dataset, indices)`` that keeps the dataset's ``.info`` (or takes ``info`` for a dataset without one)."""

    def __init__(self, dataset: Any, indices: list[int] | range, info: DatasetInfo | None = None) -> None:
        super().__init__(dataset, list(indices))
        self.info: DatasetInfo = info if info is not None else dataset.info


def as_tensors(dataset: LabeledDataset, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of ``dataset`` as one input tensor (N, ...) and one label tensor (N,), on ``device``."""
    if isinstance(dataset, LabeledTensors):
        x, y = dataset.x, dataset.y
    else:
        x = torch.stack([dataset[i][0] for i in range(len(dataset))])
        y = torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))])
    return (x, y) if device is None else (x.to(device), y.to(device))


def dataset_bounds(dataset: Dataset | LabeledDataset) -> tuple[float, float] | None:
    """The input bounds a dataset declares in its ``.info``; ``(0, 1)`` for a plain dataset without one."""
    return getattr(getattr(dataset, "info", None), "bounds", (0.0, 1.0))


def _where(source: str | None) -> tuple[str, type[Exception]]:
    from .files import DataFileError

    return (f"{source}: ", DataFileError) if source else ("", ValueError)


def check_class_labels(y: torch.Tensor, info: DatasetInfo, source: str | None = None) -> None:
    """One line naming ``source`` (the file) unless ``y`` is a 1-D tensor of whole numbers in [0, num_classes).

    A label out of range would stop an evaluation with an IndexError deep in a loss, or count silently as a miss
    in ``predict``."""
    where, error = _where(source)
    if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise error(f"{where}labels must be a 1-D tensor of whole numbers, got {y.dtype} of shape {tuple(y.shape)}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
        bad = ((y < 0) | (y >= info.num_classes)).nonzero().flatten()
        raise error(
            f"{where}labels in [{int(y.min())}, {int(y.max())}], expected 0..{info.num_classes - 1} for "
            f"{info.name} ({len(bad)} out of range, the first at sample {int(bad[0])})"
        )


def check_labeled(x: torch.Tensor, y: torch.Tensor, info: DatasetInfo, source: str | None = None) -> None:
    """One line naming ``source`` unless ``x`` and ``y`` are a dataset of ``info``: as many labels as inputs,
    labels in range (:func:`check_class_labels`), floating inputs, finite and inside ``info.bounds`` (inputs read
    at the wrong scale, all zeros or 0-255, would give a meaningless table)."""
    where, error = _where(source)
    if x.shape[0] != y.shape[0]:
        raise error(f"{where}{x.shape[0]} inputs but {y.shape[0]} labels")
    check_class_labels(y, info, source)
    if not x.is_floating_point():
        raise error(f"{where}inputs must be floating point (scaled to [0, 1]), got {x.dtype}")
    if x.numel():
        low, high = torch.stack(torch.aminmax(x)).tolist()
        if not (math.isfinite(low) and math.isfinite(high)):
            raise error(f"{where}inputs contain NaN or inf")
        if info.bounds is not None and (low < info.bounds[0] or high > info.bounds[1]):
            raise error(f"{where}inputs in [{low:.4g}, {high:.4g}], expected inside [{info.bounds[0]:g}, {info.bounds[1]:g}]")


class LabeledTensors(Dataset):
    """An in-memory dataset: inputs ``x`` (N, ...) as float32 and labels ``y`` (N,) as int64, checked against
    ``info`` (:func:`check_labeled`; ``source`` names the file in its errors)."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, info: DatasetInfo, source: str | None = None, check: bool = True
    ) -> None:
        if check:
            check_labeled(x, y, info, source)
        self.x = x
        self.y = y.long()
        self.info = info

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def head(self, n: int | None) -> LabeledTensors:
        """The first ``n`` samples (all when ``n`` is None); the splits are pre-shuffled, so classes mix."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"number of samples must be >= 1, got {n}")
        return LabeledTensors(self.x[:n], self.y[:n], self.info, check=False)

    def __repr__(self) -> str:
        return f"LabeledTensors({self.info.name}, n={len(self)}, shape={tuple(self.x.shape[1:])})"
