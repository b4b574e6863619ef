"""What a run depends on beyond its settings: the model as it computes, the data, the package and torch versions.

A records file or a training checkpoint stores these content hashes; resuming with a different model under
the same checkpoint path (other weights, another ``--source`` reading the same file, a changed normalization),
other data (``--samples``), or another version is refused naming what changed, instead of mixing two runs'
samples into one table. Tensors are hashed in their logical element order, so a model stored channels-last
hashes as it does contiguous: the layout is how a model is run, not what it computes.
"""

from __future__ import annotations

import hashlib
import inspect
from itertools import chain
from typing import Any

import torch
import torch.nn as nn

from .data.dataset import LabeledDataset


def _update(digest: hashlib._Hash, tensor: torch.Tensor) -> None:
    tensor = tensor.detach()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    if tensor.numel():
        # reshape(-1) of a contiguous tensor has stride 1 whatever its format and rank (a 0-dim buffer, a 1x1
        # channels-last weight), so the byte view below always exists and reads the elements in logical order.
        flat = tensor.cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())


def model_digest(model: nn.Module) -> str:
    """sha256 of the model's state dict (names, dtypes, shapes and values of its parameters and persistent buffers)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        _update(digest, tensor)
    return digest.hexdigest()[:16]


def _forward_source(cls: type[nn.Module]) -> str:
    """The source of a module class's ``forward`` (torch's own modules: their name; torch's version covers them)."""
    if cls.__module__.startswith("torch."):
        return ""
    try:
        return inspect.getsource(cls.forward)
    except (OSError, TypeError):  # defined in a REPL or a compiled extension: the class name must do
        return ""


def computation_digest(model: nn.Module) -> str:
    """sha256 of the model as it computes: every submodule's class, settings (``extra_repr``: a normalization's
    mean and std, a convolution's stride) and ``forward`` source, and every parameter and buffer, persistent or
    not (:class:`~advpnml.models.Normalize` keeps its mean and std out of the state dict)."""
    digest = hashlib.sha256()
    for name, module in model.named_modules(remove_duplicate=False):
        cls = type(module)
        digest.update(f"{name}:{cls.__module__}.{cls.__qualname__}({module.extra_repr()})".encode())
        digest.update(_forward_source(cls).encode())
    for name, tensor in chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)):
        digest.update(name.encode())
        _update(digest, tensor)
    return digest.hexdigest()[:16]


def architecture(model: nn.Module) -> str:
    """The architecture in words: the registry name and the external source it was read as, else the class."""
    named = getattr(model, "advpnml_architecture", None)
    if isinstance(named, str):
        return named
    spec = getattr(model, "advpnml_spec", None)
    if isinstance(spec, dict) and "arch" in spec:
        return spec["arch"] + (f" (source {spec['source']})" if spec.get("source") else "")
    return f"{type(model).__module__}.{type(model).__qualname__}"


def data_digest(dataset: LabeledDataset) -> str:
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


def run_identity(model: nn.Module, dataset: LabeledDataset, precision: str = "fp32") -> dict[str, str]:
    """The content a run depends on, as stored in its records header (``precision`` only when not fp32, so the
    headers of every fp32 run, older ones included, stay as they were)."""
    from .version import __version__

    return {
        "model_sha256": model_digest(model),
        "computation_sha256": computation_digest(model),
        "architecture": architecture(model),
        "data_sha256": data_digest(dataset),
        "advpnml": __version__,
        "torch": torch.__version__,
        **({"precision": precision} if precision != "fp32" else {}),
    }


_WHAT = {
    "model_sha256": "the model's weights",
    "data_sha256": "the data",
    "advpnml": "the advpnml version",
    "torch": "the torch version",
    "precision": "the precision",
    "architecture": "the architecture",
    "computation_sha256": "the model as it computes (its layers, normalization, buffers or forward code)",
}
#: what a header without the key means
_DEFAULTS = {"precision": "fp32"}


def identity_changes(stored: dict[str, Any] | None, current: dict[str, str]) -> list[str]:
    """What differs between a stored identity and the current one (nothing when none was stored: older files).

    A key an older header lacks (``architecture``, ``computation_sha256``) is not compared: those files resume."""
    if not isinstance(stored, dict) or not stored:
        return []
    changes = []
    for key in dict.fromkeys([*current, *_DEFAULTS]):
        if key in stored or key in _DEFAULTS:
            old, new = stored.get(key, _DEFAULTS.get(key)), current.get(key, _DEFAULTS.get(key))
            if old != new:
                changes.append(f"{_WHAT.get(key, key)} ({old} -> {new})")
    return changes
