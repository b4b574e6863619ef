"""The user's own data: ``(x, y)`` tensors or arrays, a torch ``Dataset``, a ``.npz``/``.pt`` file, or an image folder.

Every form becomes a dataset with an ``.info`` (:class:`~advpnml.data.DatasetInfo`), checked in one line before
any model runs: ``x`` of shape (N, ...) in [0, 1] (uint8 pixels 0-255 are scaled), ``y`` whole numbers, as many
of each. The class count is the largest label + 1 until a model says more (:func:`advpnml.jobs.make_run` checks
that the model has a logit for every label).
"""

from __future__ import annotations

import os
import reprlib
import zipfile
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
    if not len(y):
        raise error(f"{where}x and y hold no samples")
    classes = int(y.max()) + 1 if len(y) and not y.is_floating_point() else 1
    info = DatasetInfo(name, max(classes, 2), tuple(x.shape[1:]), (0.0, 1.0))
    return LabeledTensors(x, y, info, source=source)


def _as_tensor(value: Any, name: str, where: str, error: type[Exception]) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as err:
            raise error(f"{where}{name} is not a rectangular array of numbers: {err}") from None
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise error(f"{where}{name} holds Python objects, not numbers")
        if value.dtype.kind not in "biuf":  # strings, bytes, dates, complex numbers
            raise error(
                f"{where}{name} holds {value.dtype.name} values, not numbers (e.g. {reprlib.repr(value.flat[0].item()) if value.size else 'none'})"
            )
        return torch.from_numpy(np.ascontiguousarray(value))
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
        _check_npz(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files if key in ("x", "y")}
                keys = archive.files
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
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


#: the most pixels one image of a folder may have (checked from its header, before it is decoded): 8192 x 8192
MAX_IMAGE_PIXELS = 8192 * 8192
#: the longest side over the shortest an image may have: beyond it the center square keeps under 1/16 of the image
MAX_ASPECT = 16
#: modes read as one channel, and the full scale of each (16-bit PNGs and TIFFs open as I;16)
_GRAY_SCALE = {"1": 255, "L": 255, "LA": 255, "La": 255, "I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535}
#: modes whose pixels have no fixed full scale: refused rather than guessed
_UNSCALED = ("I", "F", "I;32", "I;32L", "I;32B", "F;32", "F;64")


def _folder_files(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """The class names (sorted subfolders) and every image file with its label; an image anywhere else (at the
    root, in a folder inside a class folder) is refused naming it rather than skipped."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    stray = [p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if stray:
        raise DataFileError(
            f"{stray[0]} lies at the image folder's root ({len(stray)} such); each image goes in a class subfolder: "
            f"{root}/<class>/<image>"
        )
    files = []
    for label, name in enumerate(classes):
        for f in sorted((root / name).rglob("*")):
            if not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES or f.name.startswith("."):
                continue
            if f.parent != root / name:
                raise DataFileError(
                    f"{f} lies in a folder inside class folder {name!r}; an image folder is one level deep: "
                    f"{root}/<class>/<image>"
                )
            files.append((f, label))
    return classes, files


def _read_image(path: Path, size: int) -> tuple[np.ndarray, bool]:
    """One image as the model sees it: its center square resized to ``size`` x ``size``, as float32 (H, W, C) in
    [0, 1], each mode scaled by its own bit depth (8-bit /255, 16-bit /65535), transparency refused; and whether it
    holds color (channels that differ). Its size is checked from the header before anything is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            img: Any = opened
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise DataFileError(f"{path} has {w} x {h} pixels, more than the {MAX_IMAGE_PIXELS:,} an image may have here")
            if min(w, h) < 1 or max(w, h) > MAX_ASPECT * min(w, h):
                raise DataFileError(
                    f"{path} is {w} x {h} pixels: its center square would keep under 1/{MAX_ASPECT} of it; crop it first"
                )
            if img.mode in _UNSCALED:
                raise DataFileError(
                    f"{path} has {img.mode!r} pixels (32-bit or float) whose full scale is unknown; save it as 8- or 16-bit"
                )
            side = min(w, h)
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            if img.mode in _GRAY_SCALE:
                scale = _GRAY_SCALE[img.mode]
                if img.mode in ("LA", "La"):
                    _check_opaque(path, img.getchannel("A"))
                    img = img.convert("L")
                elif img.mode == "1":
                    img = img.convert("L")
                out = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
                return (np.asarray(out, dtype=np.float64) / scale).astype(np.float32)[:, :, None], False
            if "A" in img.mode or "transparency" in img.info:
                rgba = img.convert("RGBA")
                _check_opaque(path, rgba.getchannel("A"))
                img = rgba
            rgb = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, box=box))
            color = bool((rgb[:, :, :1] != rgb).any())
            return (rgb.astype(np.float32) / np.float32(255)), color
    except DataFileError:
        raise
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as err:
        raise DataFileError(
            f"{path} is not a readable image: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None


def _check_opaque(path: Path, alpha: Any) -> None:
    low = alpha.getextrema()[0]
    if low < 255:
        raise DataFileError(f"{path} has transparent pixels (alpha down to {low}); flatten it onto a background first")


def _check_npz(path: Path) -> None:
    """Refuse, before anything is allocated, an ``.npz`` that is not a whole zip archive, or whose ``x``/``y``
    header claims more bytes than the archive member holds (numpy allocates what the header claims first)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename not in ("x.npy", "y.npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (
                        np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(member)
                    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    if claimed > info.file_size:
                        raise DataFileError(
                            f"{path}: {info.filename} claims shape {shape} of {dtype} ({claimed / 2**30:.3g} GiB) but "
                            f"holds {info.file_size:,} bytes; the file is damaged"
                        )
    except DataFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataFileError(f"{path} is not a readable .npz file: {str(err).splitlines()[0][:120]}") from None


def image_folder(root: str | os.PathLike, image_size: int | None) -> LabeledTensors:
    """Images in ``root/<class>/``, classes in sorted folder order, each image's center square resized to
    ``image_size`` and scaled by its own bit depth (8-bit /255, 16-bit /65535); one channel when every image is
    grayscale (a palette or RGB image whose channels are equal counts as grayscale), RGB when color images are the
    majority (grayscale ones then repeat their channel, as torchvision's ImageFolder reads them). A color image
    among mostly grayscale ones, transparency, 32-bit or float pixels, an image over :data:`MAX_IMAGE_PIXELS` or
    thinner than 1:16, and an image outside a class folder are refused in one line naming the file."""
    root = Path(root)
    if image_size is None or image_size < 1:
        raise DataFileError(f"{root} is an image folder: pass --image-size (the side the model takes, e.g. 32 or 224)")
    classes, files = _folder_files(root)
    if not files:
        raise DataFileError(f"{root} holds no images in class subfolders (expected {root}/<class>/<image>.png)")
    read = [_read_image(path, image_size) for path, _ in files]
    color = [path for (path, _), (_, is_color) in zip(files, read) if is_color]
    if color and 2 * len(color) < len(files):
        raise DataFileError(
            f"{color[0]} is in color while {len(files) - len(color)} of the folder's {len(files)} images are grayscale "
            f"({len(color)} in color); an image folder is all grayscale or mostly color"
        )
    images = [img if color else img[:, :, :1] for img, _ in read]
    images = [np.repeat(img, 3, axis=2) if color and img.shape[2] == 1 else img for img in images]
    x = np.stack(images).transpose(0, 3, 1, 2)
    y = np.array([label for _, label in files])
    dataset = tensors_dataset(x, y, name=root.name, source=str(root), image=True)
    dataset.info = DatasetInfo(root.name, max(len(classes), 2), dataset.info.input_shape, (0.0, 1.0), tuple(classes))
    return dataset


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
