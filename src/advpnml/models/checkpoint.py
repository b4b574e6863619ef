"""Checkpoints: a state dict plus the metadata that rebuilds and describes the model.

Files are read with ``torch.load(..., weights_only=True)``: tensors and plain containers only,
never arbitrary pickled code. A checkpoint saved on a GPU loads on a CPU-only machine.
"""

from __future__ import annotations

import os
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .registry import create_model

FORMAT = "advpnml-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the architecture."""


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    dataset: str | None = None,
    classes: list[str] | None = None,
    training: str | None = None,
    eps: float | None = None,
    extra: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and metadata to ``path`` (atomically: a crash never leaves half a file).

    ``model`` must come from :func:`create_model` (it carries ``advpnml_spec``). ``state`` holds
    further resumable state (optimizer, scheduler, epoch) saved beside the weights.
    """
    spec = getattr(model, "advpnml_spec", None)
    if spec is None:
        raise CheckpointError("save_checkpoint needs a model built by advpnml.create_model (it records the architecture)")
    normalize = getattr(model, "normalize", None)
    meta = {
        "format": FORMAT,
        "arch": spec["arch"],
        "kwargs": spec["kwargs"],
        "dataset": dataset,
        "classes": list(classes) if classes is not None else None,
        "normalization": {
            "mean": list(normalize.mean_values) if normalize is not None and normalize.mean_values else None,
            "std": list(normalize.std_values) if normalize is not None and normalize.std_values else None,
        },
        "training": training,
        "eps": eps,
        "extra": dict(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "state_dict": model.state_dict(), **dict(state or {})}
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # a full disk or a read-only folder (torch.save's writer raises RuntimeError)
        tmp.unlink(missing_ok=True)  # no half-written file left behind
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).strip().splitlines()[0][:160]
        raise CheckpointError(f"cannot write checkpoint {path}: {reason}") from None
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file's contents onto the CPU, safely."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        first_line = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path} with weights_only=True: {first_line}") from None
    return payload


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved at ``path``; returns ``(model in eval mode, metadata)``."""
    payload = read_checkpoint(path)
    meta = payload.get("meta") if isinstance(payload, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an advpnml checkpoint (no '{FORMAT}' metadata); "
            "for a plain state dict pass --source ARCH_OR_SOURCE (Python: advpnml.models.load_external(path, arch))"
        )
    if not isinstance(payload.get("state_dict"), Mapping) or "arch" not in meta:
        raise CheckpointError(
            f"{path} holds advpnml metadata but no weights (no 'state_dict' table); it is not a usable checkpoint"
        )
    check_metadata(meta, str(path))
    try:
        model = create_model(meta["arch"], **meta.get("kwargs", {}))
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    load_weights(model, payload["state_dict"], source=str(path), arch=meta["arch"])
    return model.to(device).eval(), meta


#: The metadata fields a checkpoint may hold and the types each must have (None allowed for all but arch and kwargs).
_META_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "arch": (str,),
    "kwargs": (dict,),
    "dataset": (str, type(None)),
    "classes": (list, type(None)),
    "normalization": (dict, type(None)),
    "training": (str, type(None)),
    "eps": (int, float, type(None)),
    "extra": (dict, type(None)),
}


def check_metadata(meta: Mapping[str, Any], source: str) -> None:
    """Each known metadata field of the right type (a list where the architecture's name belongs would otherwise
    surface as a TypeError deep in the model's constructor), one line naming the field."""
    for key, kinds in _META_TYPES.items():
        if key in meta and (not isinstance(meta[key], kinds) or isinstance(meta[key], bool)):
            wanted = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
            raise CheckpointError(
                f"checkpoint {source}: metadata {key!r} must be {wanted}, got {type(meta[key]).__name__} "
                f"{reprlib.repr(meta[key])}"
            )
    if "kwargs" in meta and not all(isinstance(k, str) for k in meta["kwargs"]):
        raise CheckpointError(
            f"checkpoint {source}: metadata 'kwargs' must map argument names to values, got {reprlib.repr(meta['kwargs'])}"
        )


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, arch: str) -> None:
    """``load_state_dict(strict=True)`` with one readable line when the file does not fit the architecture: missing,
    unexpected or non-tensor entries, other shapes, integer values where the model has floating weights (torch
    would cast them silently), NaN or inf weights."""
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        shown = ", ".join(f"{k} ({type(state_dict[k]).__name__})" for k in not_tensors[:3])
        raise CheckpointError(
            f"checkpoint {source} holds entries that are not tensors: {shown}"
            f"{f' ({len(not_tensors)} in all)' if len(not_tensors) > 3 else ''}"
        )
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if keys:
                shown = ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"checkpoint {source} does not fit architecture {arch!r}: " + "; ".join(parts))
    retyped = [
        f"{k} ({state_dict[k].dtype}, the model's is {v.dtype})"
        for k, v in expected.items()
        if v.is_floating_point() and not state_dict[k].is_floating_point()
    ]
    if retyped:
        raise CheckpointError(
            f"checkpoint {source} holds integer values where {arch!r} has floating weights: "
            f"{', '.join(retyped[:3])}; they would be cast silently (a damaged or quantized file?)"
        )
    broken = [
        k for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if broken:
        raise CheckpointError(
            f"checkpoint {source} has NaN or inf weights in {', '.join(broken[:3])}"
            f"{f' ({len(broken)} tensors)' if len(broken) > 3 else ''}: a diverged or damaged model"
        )
    model.load_state_dict(state_dict, strict=True)
