"""ImageNet validation images from an ImageFolder directory, restricted to the paper's 100 classes.

The paper keeps the first 100 logits of the model and evaluates on those 100 classes (Sec. 5.2),
i.e. the first 100 class folders in sorted WordNet-id order.
"""

from __future__ import annotations

import os
from pathlib import Path

from .dataset import DatasetInfo, InfoSubset
from .files import DataFileError


def imagenet(split: str = "val", data_dir: str | os.PathLike | None = None, num_classes: int = 100) -> InfoSubset:
    """An ImageFolder over ``data_dir/val`` (or ``data_dir``), 224x224 center crops in [0, 1]."""
    if split not in ("val", "test"):
        raise ValueError(f"unknown split {split!r} for imagenet; only the validation set is used ('val')")
    if data_dir is None:
        raise DataFileError("dataset 'imagenet' needs --data-dir (an ImageFolder of the validation set: one folder per class)")
    try:
        from torchvision import datasets, transforms
    except ImportError as err:
        raise ImportError(f"dataset 'imagenet' needs torchvision: pip install 'advpnml[imagenet]' [{err}]") from None
    root = Path(data_dir) / "val" if (Path(data_dir) / "val").is_dir() else Path(data_dir)
    if not root.is_dir():
        raise DataFileError(f"ImageNet validation folder not found: {root}")
    transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    folder = datasets.ImageFolder(str(root), transform=transform)
    keep = [i for i, target in enumerate(folder.targets) if target < num_classes]
    info = DatasetInfo("imagenet", num_classes, (3, 224, 224), (0.0, 1.0), tuple(folder.classes[:num_classes]))
    return InfoSubset(folder, keep, info)
