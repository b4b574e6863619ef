"""Adapters for checkpoint files users bring from other projects.

Each source names an architecture, its normalization and the key clean-ups its files need:
``module.`` prefixes from DataParallel, a wrapping ``{"state_dict": ...}``, unused parameters.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from .checkpoint import CheckpointError, load_weights, read_checkpoint
from .normalization import IMAGENET_MEAN, IMAGENET_STD
from .registry import create_model

StateDict = dict[str, torch.Tensor]


def _drop_prefix(prefix: str) -> Callable[[StateDict], StateDict]:
    return lambda sd: {k: v for k, v in sd.items() if not k.startswith(prefix)}


def _add_prefix(prefix: str) -> Callable[[StateDict], StateDict]:
    return lambda sd: {(k if k.startswith(prefix) else prefix + k): v for k, v in sd.items()}


@dataclass(frozen=True)
class ExternalSource:
    """How to read one family of external checkpoints."""

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    fix_keys: Callable[[StateDict], StateDict] | None = None
    description: str = ""


EXTERNAL_SOURCES: dict[str, ExternalSource] = {
    "carmon2019": ExternalSource(
        "wide_resnet", {"depth": 28, "widen_factor": 10, "mean": None, "std": None},
        # Carmon et al. / RobustBench WRNs carry an unused ``sub_block1``; inputs are raw [0, 1].
        _drop_prefix("sub_block1."), "Carmon et al. 2019 / RobustBench CIFAR-10 WRN-28-10 (the paper's CIFAR model)",
    ),
    "wong2020_imagenet": ExternalSource(
        "resnet50", {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "keep_logits": 100},
        _add_prefix("net."), "Wong et al. 2020 fast-AT ResNet-50 for ImageNet, first 100 logits (the paper's ImageNet model)",
    ),
    "advertorch_lenet5": ExternalSource(
        "lenet5", {"mean": None, "std": None}, None, "advertorch MNIST LeNet-5 (shared/data/weights)",
    ),
}


def unwrap_state_dict(payload: Any, source: str = "checkpoint") -> StateDict:
    """Find the state dict inside common wrappers and strip DataParallel ``module.`` prefixes."""
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{source} holds no state dict of tensors (looked under state_dict, model_state_dict, model, net)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in payload.items()}


def load_external(path: str | os.PathLike, source: str, **overrides: Any) -> nn.Module:
    """Load an external checkpoint as an advpnml model (eval mode, on CPU).

    ``source`` is a key of :data:`EXTERNAL_SOURCES` or a registered architecture name (then
    only the generic clean-ups apply). ``overrides`` change the architecture's kwargs, e.g.
    ``keep_logits=None`` to keep all 1000 ImageNet logits.
    """
    if source in EXTERNAL_SOURCES:
        spec = EXTERNAL_SOURCES[source]
    else:
        spec = ExternalSource(source)  # create_model below names the known architectures if this is none
    model = create_model(spec.arch, **{**spec.kwargs, **overrides})
    state_dict = unwrap_state_dict(read_checkpoint(path), source=str(path))
    if spec.fix_keys is not None:
        state_dict = spec.fix_keys(state_dict)
    load_weights(model, state_dict, source=str(path), arch=spec.arch)
    return model.eval()
