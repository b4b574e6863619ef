"""Checks on user input, each failing with one line that names the value and what was expected.

Every public entry point (defense, attacks, data, checkpoints) calls these so a mistake is
reported where it was made, not as a shape error three layers down.
"""

from __future__ import annotations

import math

import torch


def check_nonnegative(name: str, value: float) -> float:
    """Return ``value`` as float if it is a finite number >= 0, else raise ValueError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is an int >= 1, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_bounds(bounds: tuple[float, float] | None) -> tuple[float, float] | None:
    """Validate an input-domain box ``(low, high)``; ``None`` means unbounded (e.g. the 2-D toy data)."""
    if bounds is None:
        return None
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (low, high) or None, got {bounds!r}") from None
    if not low < high:
        raise ValueError(f"bounds must satisfy low < high, got {bounds!r}")
    return low, high


def check_inputs(x: torch.Tensor, bounds: tuple[float, float] | None = (0.0, 1.0), name: str = "x") -> None:
    """Raise ValueError unless ``x`` is a floating batch (N, ...) with finite values inside ``bounds``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must be a batch of shape (N, ...) with at least 2 dims, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor (images scaled to [0, 1]), got dtype {x.dtype}")
    if x.numel() == 0:
        return
    # One reduction and one host sync (NaN propagates through aminmax, inf shows as an extreme).
    low, high = torch.stack(torch.aminmax(x.detach())).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains NaN or inf values")
    if bounds is not None and (low < bounds[0] or high > bounds[1]):
        raise ValueError(
            f"{name} has values in [{low:.4g}, {high:.4g}], expected inside [{bounds[0]:g}, {bounds[1]:g}] "
            "(inputs are images scaled to [0, 1]; normalization belongs inside the model)"
        )


def check_labels(y: torch.Tensor, n: int, num_classes: int | None = None, name: str = "y") -> None:
    """Raise ValueError unless ``y`` is an integer vector of length ``n`` with labels in [0, num_classes)."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != n:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"{name} must be a 1-D label tensor of length {n}, got {shape}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if num_classes is not None and n > 0 and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} has labels in [{int(y.min())}, {int(y.max())}], expected in [0, {num_classes - 1}]")
