"""Architectures by name (timm style): ``create_model("wide_resnet", depth=28, widen_factor=10)``.

Every model takes inputs in the dataset's pixel range, normalizes them in its first layer and
returns logits. ``create_model`` records the architecture name and the keyword arguments it
was built with on ``model.advpnml_spec``, which checkpoints save so a file rebuilds its model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn


@dataclass(frozen=True)
class ArchInfo:
    """What the registry knows about an architecture: its factory and default keyword arguments."""

    name: str
    factory: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, ArchInfo] = {}


def register_model(name: str, description: str = "", **defaults: Any) -> Callable:
    """Decorator adding a model factory to the registry under ``name`` with default kwargs."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = ArchInfo(name, factory, dict(defaults), description)
        return factory

    return wrap


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_REGISTRY)


def arch_info(name: str) -> ArchInfo:
    """Registry entry for ``name``; a clear error listing the known names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; expected one of: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build architecture ``name``; ``kwargs`` override its defaults (num_classes, mean, std, ...)."""
    info = arch_info(name)
    resolved = {**info.defaults, **kwargs}
    try:
        model = info.factory(**resolved)
    except TypeError as err:
        raise ValueError(f"bad arguments for architecture {name!r}: {err}") from None
    model.advpnml_spec = {"arch": name, "kwargs": to_plain(resolved)}  # type: ignore[assignment]  # a plain attribute, not a submodule
    return model


def to_plain(value: Any) -> Any:
    """Tuples to lists, recursively, so the spec round-trips through a weights_only checkpoint."""
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value
