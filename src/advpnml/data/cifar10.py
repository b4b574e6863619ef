"""CIFAR-10 from the ``cifar-10-batches-py`` pickles, read directly (no torchvision, no MD5 check)."""

from __future__ import annotations

import math
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dataset import DatasetInfo, LabeledTensors, check_class_labels
from .files import DataFileError, download_file, find_file

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_INFO = DatasetInfo("cifar10", 10, (3, 32, 32), (0.0, 1.0), CIFAR10_CLASSES)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_SUBDIRS = ("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "")


class _BatchUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that lets a CIFAR-10 batch name numpy's array reconstruction and nothing else (plain
    dicts, lists, strings and bytes need no global), each through a bounded wrapper: a crafted file cannot run code,
    nor make the reader allocate more than the file could hold (an array "of 1 TiB" in a 200-byte pickle)."""

    def __init__(self, file: Any, path: Path, size: int) -> None:
        super().__init__(file, encoding="latin1")
        self.path, self.size = path, size

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return self._reconstruct
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":  # protocol 5's arrays
            return self._frombuffer
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return self._dtype
        if (module, name) == ("_codecs", "encode"):  # how protocol 2 stores bytes: latin-1 text encoded back
            return self._latin1
        raise DataFileError(
            f"{self.path} is not a CIFAR-10 batch: it names {module}.{name}, which a batch never does (refused unread)"
        )

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not np.ndarray or not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise DataFileError(f"{self.path} is not a CIFAR-10 batch: it builds an array of {subtype!r} with shape {shape!r}")
        claimed = math.prod(shape) * np.dtype(dtype).itemsize
        if claimed > self.size:
            raise DataFileError(f"{self.path} claims an array of {claimed:,} bytes in a file of {self.size:,} (refused unread)")
        return np.ndarray.__new__(np.ndarray, shape, dtype)

    def _frombuffer(self, buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(shape, tuple) or order not in ("C", "F"):
            raise DataFileError(f"{self.path} is not a CIFAR-10 batch: it builds an array of {dtype!r} with shape {shape!r}")
        return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)  # a view of bytes already read: no allocation

    def _dtype(self, *args: Any) -> np.dtype:
        dtype = np.dtype(*args)
        if dtype.hasobject:
            raise DataFileError(f"{self.path} is not a CIFAR-10 batch: it holds Python objects in an array (refused unread)")
        return dtype

    def _latin1(self, text: Any, encoding: Any = "utf-8") -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise DataFileError(f"{self.path} is not a CIFAR-10 batch: it encodes {type(text).__name__} as {encoding!r}")
        return text.encode("latin1")


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The ``(N, 3072)`` uint8 pixels and ``(N,)`` labels of one batch file, checked before anything is converted;
    the one way the project unpickles a batch (:class:`_BatchUnpickler`)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        # The CIFAR-10 batches are pickled dicts of numpy arrays, the format the dataset is published in.
        try:
            batch = _BatchUnpickler(f, path, size).load()
        except DataFileError:
            raise
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
            MemoryError,
            RecursionError,
        ) as err:
            raise DataFileError(f"{path} is not a readable CIFAR-10 batch: {str(err)[:160] or type(err).__name__}") from None
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise DataFileError(f"{path} is not a CIFAR-10 batch (expected a dict with 'data' and 'labels')")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "uif":
        raise DataFileError(f"{path} is not a CIFAR-10 batch: 'data' is {type(data).__name__}, expected a uint8 array")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFileError(f"{path} is not a CIFAR-10 batch: data {data.shape} (expected (N, 3072))")
    if data.dtype != np.uint8:
        span = f" in [{data.min():.4g}, {data.max():.4g}]" if data.size else ""
        raise DataFileError(
            f"{path}: 'data' holds {data.dtype} values{span}; a CIFAR-10 batch holds uint8 pixels 0-255 "
            "(reading it as such would give wrong images)"
        )
    if isinstance(labels, np.ndarray):
        ok = labels.ndim == 1 and labels.dtype.kind in "iu"
    else:
        ok = isinstance(labels, (list, tuple)) and all(type(v) is int for v in labels)  # noqa: E721 (bool is not a label)
    if not ok:
        inner = next((v for v in labels if type(v) is not int), None) if isinstance(labels, (list, tuple)) else None  # noqa: E721
        found = type(labels).__name__ + (f" holding a {type(inner).__name__}" if inner is not None else "")
        raise DataFileError(f"{path} is not a CIFAR-10 batch: 'labels' must be a list of whole numbers, got a {found}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataFileError(f"{path} is not a CIFAR-10 batch: {data.shape[0]} images but {labels.shape[0]} labels")
    if not len(labels):
        raise DataFileError(f"{path} holds no images (a CIFAR-10 batch of 0 samples)")
    check_class_labels(torch.from_numpy(labels), CIFAR10_INFO, str(path))
    return data, labels


def cifar10(split: str = "test", data_dir: str | os.PathLike | None = None, download: bool = False) -> LabeledTensors:
    """CIFAR-10 (50,000 train / 10,000 test), images (N, 3, 32, 32) in [0, 1]."""
    if split not in _BATCHES:
        raise ValueError(f"unknown split {split!r} for cifar10; expected 'train' or 'test'")
    if data_dir is None:
        raise DataFileError("dataset 'cifar10' needs --data-dir (a folder containing cifar-10-batches-py/)")
    arrays, sources = [], []
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
        arrays.append(read_batch(path))
        sources.append(str(path))
    data = np.concatenate([a[0] for a in arrays])
    labels = np.concatenate([a[1] for a in arrays])
    x = torch.from_numpy(data).float().div_(255.0).view(-1, 3, 32, 32)
    return LabeledTensors(x, torch.from_numpy(labels), CIFAR10_INFO, source=", ".join(sources))
