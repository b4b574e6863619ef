"""Adapters for checkpoint files users bring from other projects.

Each source names an architecture, its normalization and the key clean-ups its files need:
``module.`` prefixes from DataParallel, a wrapping ``{"state_dict": ...}``, unused parameters.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .checkpoint import CheckpointError, load_weights, read_checkpoint
from .normalization import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
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
    pick: Callable[[Any], Any] | None = None  # selects the state dict inside an unusual container
    default_path: Callable[[], Path | None] | None = None  # where an installed package ships the file


def _first_of_cascade(payload: Any) -> Any:
    """convex_adversarial saves a cascade of models as a list under ``state_dict``; the first is the classifier."""
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), list) and payload["state_dict"]:
        return payload["state_dict"][0]
    return payload


def _autoattack_example() -> Path | None:
    """``examples/model_test.pt`` inside the installed ``pyautoattack`` package, if it is installed."""
    try:
        spec = importlib.util.find_spec("pyautoattack")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "examples" / "model_test.pt"
    return path if path.is_file() else None


EXTERNAL_SOURCES: dict[str, ExternalSource] = {
    "carmon2019": ExternalSource(
        "wide_resnet",
        {"depth": 28, "widen_factor": 10, "mean": None, "std": None},
        # Carmon et al. / RobustBench WRNs carry an unused ``sub_block1``; inputs are raw [0, 1].
        _drop_prefix("sub_block1."),
        "Carmon et al. 2019 / RobustBench CIFAR-10 WRN-28-10 (the paper's CIFAR model)",
    ),
    "wong2020_imagenet": ExternalSource(
        "resnet50",
        {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "keep_logits": 100},
        _add_prefix("net."),
        "Wong et al. 2020 fast-AT ResNet-50 for ImageNet, first 100 logits (the paper's ImageNet model)",
    ),
    "advertorch_lenet5": ExternalSource(
        "lenet5",
        {"mean": None, "std": None},
        None,
        "advertorch MNIST LeNet-5 (shared/data/weights)",
    ),
    "abcrown_resnet4b": ExternalSource(
        "resnet4b",
        {"mean": CIFAR10_MEAN, "std": CIFAR10_STD},
        None,
        "alpha-beta-CROWN CIFAR-10 ResNet-4B, PGD-trained at eps 2/255 (shared/data/weights)",
    ),
    "convex_small": ExternalSource(
        "convex_small",
        {"mean": IMAGENET_MEAN, "std": (0.225, 0.225, 0.225)},
        _add_prefix("layers."),
        "Wong & Kolter convex_adversarial small CIFAR-10 CNN, certified training at eps 8/255 (shared/data/weights)",
        pick=_first_of_cascade,
    ),
    "autoattack_resnet18": ExternalSource(
        "resnet18_cifar",
        {"mean": None, "std": None},
        None,
        "AutoAttack's example CIFAR-10 ResNet-18, standard training (non-robust control; ships in pyautoattack)",
        default_path=_autoattack_example,
    ),
}


def default_checkpoint(source: str) -> Path:
    """The file a source ships with an installed package; a one-line error when there is none."""
    spec = EXTERNAL_SOURCES.get(source)
    path = spec.default_path() if spec is not None and spec.default_path is not None else None
    if path is None:
        hint = " (install it: pip install 'advpnml[autoattack]')" if source == "autoattack_resnet18" else ""
        raise CheckpointError(f"source {source!r} has no installed checkpoint{hint}; pass --checkpoint")
    return path


def unwrap_state_dict(payload: Any, source: str = "checkpoint") -> StateDict:
    """Find the state dict inside common wrappers and strip DataParallel ``module.`` prefixes."""
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{source} holds no state dict of tensors (looked under state_dict, model_state_dict, model, net)")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in payload.items()}


def load_external(path: str | os.PathLike | None, source: str, **overrides: Any) -> nn.Module:
    """Load an external checkpoint as an advpnml model (eval mode, on CPU).

    ``source`` is a key of :data:`EXTERNAL_SOURCES` or a registered architecture name (then
    only the generic clean-ups apply). ``overrides`` change the architecture's kwargs, e.g.
    ``keep_logits=None`` to keep all 1000 ImageNet logits. ``path=None`` takes the file an
    installed package ships for that source (``autoattack_resnet18``).
    """
    if path is None:
        path = default_checkpoint(source)
    if source in EXTERNAL_SOURCES:
        spec = EXTERNAL_SOURCES[source]
    else:
        spec = ExternalSource(source)  # create_model below names the known architectures if this is none
    model = create_model(spec.arch, **{**spec.kwargs, **overrides})
    if source in EXTERNAL_SOURCES:  # the run identity names the adapter: one file read as two sources is two models
        model.advpnml_spec = {**model.advpnml_spec, "source": source}  # type: ignore[assignment,dict-item]  # plain attribute
    payload = read_checkpoint(path)
    if spec.pick is not None:
        payload = spec.pick(payload)
    state_dict = unwrap_state_dict(payload, source=str(path))
    if spec.fix_keys is not None:
        state_dict = spec.fix_keys(state_dict)
    load_weights(model, state_dict, source=str(path), arch=spec.arch)
    return model.eval()
