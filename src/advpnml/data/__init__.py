"""Datasets by name: ``load_dataset("mnist5k", "test")``. Inputs in [0, 1] (toy2d: unbounded 2-D points)."""

from __future__ import annotations

import os

import torch

from .cifar10 import cifar10
from .dataset import DatasetInfo, InfoSubset, LabeledDataset, LabeledTensors, as_tensors, dataset_bounds
from .files import DataFileError
from .imagenet import imagenet
from .mnist import mnist, mnist5k
from .toy2d import toy2d

DATASETS = ("mnist5k", "mnist", "cifar10", "imagenet", "toy2d")


def load_dataset(
    name: str,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    n: int | None = None,
) -> LabeledDataset:
    """Load dataset ``name`` (one of :data:`DATASETS`); the result has an ``.info`` (:class:`DatasetInfo`).

    ``n`` keeps the first n samples (in-memory datasets are pre-shuffled with a fixed seed; folder
    datasets take n samples spread evenly over the sorted classes).
    """
    dataset: LabeledDataset
    if name == "mnist5k":
        dataset = mnist5k(split)
    elif name == "toy2d":
        dataset = toy2d(split)
    elif name == "mnist":
        dataset = mnist(split, data_dir, download)
    elif name == "cifar10":
        dataset = cifar10(split, data_dir, download)
    elif name == "imagenet":
        dataset = imagenet(split, data_dir)
    else:
        raise ValueError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}")
    if n is not None:
        if isinstance(dataset, LabeledTensors):
            dataset = dataset.head(n)
        elif n < len(dataset):
            # Folder datasets are sorted by class: spread the n samples evenly so every class is seen.
            dataset = InfoSubset(dataset, torch.linspace(0, len(dataset) - 1, n).long().tolist())
    if not len(dataset):
        raise DataFileError(f"dataset {name!r} ({split}) holds no samples")
    return dataset


__all__ = [
    "DATASETS",
    "DataFileError",
    "DatasetInfo",
    "InfoSubset",
    "LabeledDataset",
    "LabeledTensors",
    "as_tensors",
    "dataset_bounds",
    "load_dataset",
    "cifar10",
    "imagenet",
    "mnist",
    "mnist5k",
    "toy2d",
]
