"""What a run depends on beyond its settings: the model's weights, the data, the package and torch versions.

A records file or a training checkpoint stores these content hashes; resuming with a different model under
the same checkpoint path, other data (``--samples``), or another version is refused naming what changed,
instead of mixing two runs' samples into one table.
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset


def _update(digest: "hashlib._Hash", tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def model_digest(model: nn.Module) -> str:
    """sha256 of the model's state (names, dtypes, shapes and values of every parameter and buffer)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        _update(digest, tensor)
    return digest.hexdigest()[:16]


def data_digest(dataset: Dataset) -> str:
    """sha256 of the samples: the tensors of an in-memory dataset, else every sample in order."""
    digest = hashlib.sha256()
    if hasattr(dataset, "x") and hasattr(dataset, "y"):
        _update(digest, dataset.x)
        _update(digest, dataset.y)
    else:
        for i in range(len(dataset)):
            x, y = dataset[i]
            _update(digest, torch.as_tensor(x))
            _update(digest, torch.as_tensor(y))
    return digest.hexdigest()[:16]


def run_identity(model: nn.Module, dataset: Dataset, precision: str = "fp32") -> dict[str, str]:
    """The content a run depends on, as stored in its records header (``precision`` only when not fp32, so the
    headers of every fp32 run, older ones included, stay as they were)."""
    from . import __version__

    return {"model_sha256": model_digest(model), "data_sha256": data_digest(dataset), "advpnml": __version__,
            "torch": torch.__version__, **({"precision": precision} if precision != "fp32" else {})}


_WHAT = {"model_sha256": "the model's weights", "data_sha256": "the data", "advpnml": "the advpnml version",
         "torch": "the torch version", "precision": "the precision"}
#: what a header without the key means
_DEFAULTS = {"precision": "fp32"}


def identity_changes(stored: dict[str, Any] | None, current: dict[str, str]) -> list[str]:
    """What differs between a stored identity and the current one (nothing when none was stored: older files)."""
    if not stored:
        return []
    changes = []
    for key in dict.fromkeys([*current, *_DEFAULTS]):
        if key in stored or key in _DEFAULTS:
            old, new = stored.get(key, _DEFAULTS.get(key)), current.get(key, _DEFAULTS.get(key))
            if old != new:
                changes.append(f"{_WHAT.get(key, key)} ({old} -> {new})")
    return changes
