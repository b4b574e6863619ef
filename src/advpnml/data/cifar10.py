"""CIFAR-10 from the ``cifar-10-batches-py`` pickles, read directly (no torchvision, no MD5 check)."""
from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from .dataset import DatasetInfo, LabeledTensors
from .files import DataFileError, download_file, find_file

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_INFO = DatasetInfo("cifar10", 10, (3, 32, 32), (0.0, 1.0), CIFAR10_CLASSES)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_SUBDIRS = ("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "")


#: What a CIFAR-10 batch pickle may name: numpy's array reconstruction and nothing else (plain dicts, lists,
#: strings and bytes need no global). Anything else in the file is refused before it can run.
_ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy", "ndarray"), ("numpy", "dtype")}


class _BatchUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` restricted to :data:`_ALLOWED_GLOBALS`: a crafted batch file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise DataFileError(f"{self.path} is not a CIFAR-10 batch: it names {module}.{name}, which a batch never does "
                                "(refused unread)")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        # The CIFAR-10 batches are pickled dicts of numpy arrays, the format the dataset is published in.
        unpickler = _BatchUnpickler(f, encoding="latin1")
        unpickler.path = path
        try:
            batch = unpickler.load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
            raise DataFileError(f"{path} is not a readable CIFAR-10 batch: {err}") from None
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise DataFileError(f"{path} is not a CIFAR-10 batch (expected a dict with 'data' and 'labels')")
    data, labels = np.asarray(batch["data"], dtype=np.uint8), np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise DataFileError(f"{path} is not a CIFAR-10 batch: data {data.shape}, labels {labels.shape} "
                            "(expected (N, 3072) and (N,))")
    return data, labels


def cifar10(split: str = "test", data_dir: str | os.PathLike | None = None, download: bool = False) -> LabeledTensors:
    """CIFAR-10 (50,000 train / 10,000 test), images (N, 3, 32, 32) in [0, 1]."""
    if split not in _BATCHES:
        raise ValueError(f"unknown split {split!r} for cifar10; expected 'train' or 'test'")
    if data_dir is None:
        raise DataFileError("dataset 'cifar10' needs --data-dir (a folder containing cifar-10-batches-py/)")
    arrays = []
    for name in _BATCHES[split]:
        path = find_file(data_dir, _SUBDIRS, (name,))
        if path is None and download:
            archive = download_file(CIFAR10_URL, Path(data_dir) / "cifar-10-python.tar.gz")
            with tarfile.open(archive) as tar:
                tar.extractall(data_dir, filter="data")
            path = find_file(data_dir, _SUBDIRS, (name,))
        if path is None:
            raise DataFileError(
                f"CIFAR-10 file {name} not found: expected {Path(data_dir) / 'cifar-10-batches-py' / name}; "
                "pass --download to fetch it"
            )
        arrays.append(_read_batch(path))
    data = np.concatenate([a[0] for a in arrays])
    labels = np.concatenate([a[1] for a in arrays])
    x = torch.from_numpy(data).float().div_(255.0).view(-1, 3, 32, 32)
    return LabeledTensors(x, torch.from_numpy(labels), CIFAR10_INFO)
