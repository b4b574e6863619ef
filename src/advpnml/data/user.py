"""The user's own data: ``(x, y)`` tensors or arrays, a torch ``Dataset``, a ``.npz``/``.pt`` file, or an image folder.

Every form becomes a dataset with an ``.info`` (:class:`~advpnml.data.DatasetInfo`), checked in one line before
any model runs: ``x`` of shape (N, ...) in [0, 1] (uint8 pixels 0-255 are scaled), ``y`` whole numbers, as many
of each. The class count is the largest label + 1 until a model says more (:func:`advpnml.jobs.make_run` checks
that the model has a logit for every label).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .dataset import DatasetInfo, InfoSubset, LabeledDataset, LabeledTensors
from .files import DataFileError

#: image files an image folder may hold (one subfolder per class)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def tensors_dataset(x: Any, y: Any, name: str = "tensors", source: str | None = None, image: bool = False) -> LabeledTensors:
    """``x`` (N, ...) and ``y`` (N,) as a checked in-memory dataset; ``source`` names the file in errors, ``image``
    demands (N, C, H, W)."""
    where, error = (f"{source}: ", DataFileError) if source else ("", ValueError)
    x, y = _as_tensor(x, "x", where, error), _as_tensor(y, "y", where, error)
    if x.dim() < 2 or (image and x.dim() != 4):
        want = "(N, C, H, W) images" if image else "a batch (N, ...) with at least 2 dims"
        hint = " (add a channel axis: x[:, None])" if image and x.dim() == 3 else ""
        raise error(f"{where}x must be {want}, got shape {tuple(x.shape)}{hint}")
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    elif not x.is_floating_point():
        raise error(f"{where}x must be uint8 pixels (0-255) or floats in [0, 1], got {x.dtype}")
    else:
        x = x.float()
    if y.dim() != 1:
        raise error(f"{where}y must be a 1-D tensor of labels, got shape {tuple(y.shape)}")
    if y.is_floating_point() and len(y) and bool((y == y.round()).all()):
        y = y.long()  # labels saved as floats (3.0): whole numbers, taken as such
    if x.shape[0] != y.shape[0]:
        raise error(f"{where}x holds {x.shape[0]} samples but y {y.shape[0]} labels")
    classes = int(y.max()) + 1 if len(y) and not y.is_floating_point() else 1
    info = DatasetInfo(name, max(classes, 2), tuple(x.shape[1:]), (0.0, 1.0))
    return LabeledTensors(x, y, info, source=source)


def _as_tensor(value: Any, name: str, where: str, error: type[Exception]) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise error(f"{where}{name} holds Python objects, not numbers")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)):
        try:
            return torch.as_tensor(np.asarray(value))
        except (ValueError, TypeError) as err:
            raise error(f"{where}{name} is not a rectangular array of numbers: {err}") from None
    raise error(f"{where}{name} must be a tensor or an array, got {type(value).__name__}")


def read_data_file(path: str | os.PathLike, image_size: int | None = None) -> LabeledTensors:
    """A ``.npz`` or ``.pt`` file holding ``x`` (N, C, H, W: uint8 0-255 or float in [0, 1]) and ``y``, or an image
    folder (one subfolder per class, ``image_size`` square). Nothing is unpickled: ``.npz`` is read with
    ``allow_pickle=False``, ``.pt`` with ``weights_only=True``."""
    path = Path(path)
    if path.is_dir():
        return image_folder(path, image_size)
    if not path.is_file():
        raise DataFileError(f"data file not found: {path} (expected a .npz or .pt file, or an image folder)")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files if key in ("x", "y")}
                keys = archive.files
        except (OSError, ValueError) as err:
            raise DataFileError(f"{path} is not a readable .npz file: {str(err).splitlines()[0][:120]}") from None
    elif path.suffix in (".pt", ".pth"):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for corrupt or unsafe files
            raise DataFileError(
                f"{path} cannot be read with weights_only=True: {str(err).strip().splitlines()[0][:120]}"
            ) from None
        keys = list(payload) if isinstance(payload, dict) else []
        arrays = {key: payload[key] for key in keys if key in ("x", "y")}
    else:
        raise DataFileError(f"{path}: expected a .npz or .pt file (or an image folder), got {path.suffix or 'no suffix'}")
    if set(arrays) != {"x", "y"}:
        raise DataFileError(
            f"{path} must hold arrays 'x' (N, C, H, W) and 'y' (N,), found: {', '.join(map(str, keys)) or 'nothing'}"
        )
    return tensors_dataset(arrays["x"], arrays["y"], name=path.stem, source=str(path), image=True)


def image_folder(root: str | os.PathLike, image_size: int | None) -> LabeledTensors:
    """Images in ``root/<class>/``, classes in sorted folder order, each resized (shorter side) and center-cropped
    to ``image_size``; grayscale when every image is, RGB otherwise."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if image_size is None or image_size < 1:
        raise DataFileError(f"{root} is an image folder: pass --image-size (the side the model takes, e.g. 32 or 224)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [
        (f, label)
        for label, name in enumerate(classes)
        for f in sorted((root / name).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataFileError(f"{root} holds no images in class subfolders (expected {root}/<class>/<image>.png)")
    images = []
    for path, _ in files:
        try:
            with Image.open(path) as img:
                images.append(_center_square(img, image_size))
        except (OSError, UnidentifiedImageError) as err:
            raise DataFileError(f"{path} is not a readable image: {err}") from None
    gray = all(img.mode in ("L", "1", "I;16") for img in images)
    x = np.stack([np.asarray(img.convert("L" if gray else "RGB")) for img in images])
    x = x[:, None] if gray else x.transpose(0, 3, 1, 2)
    y = np.array([label for _, label in files])
    dataset = tensors_dataset(x, y, name=root.name, source=str(root), image=True)
    dataset.info = DatasetInfo(root.name, max(len(classes), 2), dataset.info.input_shape, (0.0, 1.0), tuple(classes))
    return dataset


def _center_square(img: Any, size: int) -> Any:
    from PIL import Image

    scale = size / min(img.size)
    w, h = max(size, round(img.size[0] * scale)), max(size, round(img.size[1] * scale))
    img = img.resize((w, h), Image.Resampling.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


class DatasetView(Dataset):
    """A user's torch ``Dataset`` as the evaluation reads it: inputs as float tensors, labels as ints, an ``.info``
    from its first sample and its labels (``targets`` where the dataset has them, else read once)."""

    def __init__(self, dataset: Any, name: str | None = None) -> None:
        self.dataset = dataset
        if not len(dataset):
            raise ValueError("the dataset is empty")
        x0, _ = self._sample(0)
        targets = getattr(dataset, "targets", None)
        labels = (
            [int(t) for t in targets]
            if targets is not None and len(targets) == len(dataset)
            else [int(self._sample(i)[1]) for i in range(len(dataset))]
        )
        if min(labels) < 0:
            raise ValueError(f"the dataset has a negative label ({min(labels)})")
        classes = getattr(dataset, "classes", None)
        count = max(len(classes) if classes is not None else 0, max(labels) + 1, 2)
        self.info = DatasetInfo(
            name or type(dataset).__name__,
            count,
            tuple(x0.shape),
            (0.0, 1.0),
            tuple(map(str, classes)) if classes is not None else None,
        )

    def _sample(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError(f"dataset[{index}] must be an (input, label) pair, got {type(item).__name__}")
        x = torch.as_tensor(np.asarray(item[0]) if not isinstance(item[0], torch.Tensor) else item[0])
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        return x, torch.as_tensor(int(item[1]))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sample(index)


def as_dataset(
    data: Any, n: int | None = None, data_dir: str | os.PathLike | None = None, image_size: int | None = None, split: str = "test"
) -> LabeledDataset:
    """Any data form :func:`advpnml.evaluate` takes, as a dataset with an ``.info``, cut to its first ``n`` samples:
    an ``(x, y)`` pair, a torch ``Dataset``, a dataset name (:data:`advpnml.data.DATASETS`), or a path."""
    from . import DATASETS, load_dataset

    if isinstance(data, str) and data in DATASETS:
        return load_dataset(data, split, data_dir, n=n)
    if isinstance(data, (str, os.PathLike)):
        if not Path(data).exists():
            raise DataFileError(f"data {str(data)!r} is neither a dataset name ({', '.join(DATASETS)}) nor a file or folder")
        dataset: LabeledDataset = read_data_file(data, image_size)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        dataset = tensors_dataset(*data)
    elif isinstance(data, LabeledTensors) or hasattr(data, "info"):
        dataset = data
    elif isinstance(data, Dataset):
        dataset = DatasetView(data)
    else:
        raise ValueError(
            f"data must be an (x, y) pair, a torch Dataset, a dataset name ({', '.join(DATASETS)}) or a "
            f"file path, got {type(data).__name__}"
        )
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if isinstance(dataset, LabeledTensors):
            dataset = dataset.head(n)
        elif n < len(dataset):
            dataset = InfoSubset(dataset, range(n))
    return dataset
