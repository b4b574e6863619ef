"""bf16 autocast of a classifier, and a measured answer to "does bf16 change the verdict?" (issue 18).

On tensor-core GPUs bf16 convolutions and matrix products run at about twice the TF32 rate (H100/H200
dense: 989 vs 495 TFLOP/s). bf16 keeps 8 bits of mantissa, though: the defense takes the *sign* of
an input gradient (eq. 9) and an attack's outcome on a sample near the boundary can flip. So bf16 is
an option, never a default, and :func:`agreement` measures, on real data, how often bf16 gives the
fp32 prediction and the fp32 attack outcome, sample by sample.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

#: what ``--precision`` takes
PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` itself, or a one-line error naming the bad value."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


class Autocast(nn.Module):
    """``model`` run under ``torch.autocast`` in ``dtype``; logits come back in float32.

    Weights and inputs stay float32 (the defense's input checks, the attacks' projections and every
    loss see fp32 tensors); autocast runs convolutions and matrix products in bf16 on the device the
    input is on (CUDA or CPU).
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's logits, computed under bf16 autocast and returned as float32."""
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            logits = self.model(x)
        return logits.float()


def with_precision(model: nn.Module, precision: str) -> nn.Module:
    """``model`` itself for ``fp32``, wrapped in :class:`Autocast` for ``bf16``."""
    return Autocast(model) if check_precision(precision) == "bf16" else model


def agreement(
    model: nn.Module,
    targets: Callable[[nn.Module], dict[str, nn.Module]],
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]],
    precision: str = "bf16",
    batch_size: int = 100,
) -> dict[str, dict[str, float]]:
    """How often ``precision`` gives fp32's answers, for every model ``targets`` builds on a classifier
    (e.g. ``lambda m: {"base": m, "defense": AdversarialPnml(m, 0.1)}``): once on ``model``, once on it
    wrapped in :func:`with_precision` (so the defense's own arithmetic stays fp32).

    For every model: the fraction of samples whose prediction is the same (``predictions``), and for every
    attack, run once on the fp32 model and once on the low-precision one (each judged on the model it
    attacked), the fraction of samples with the same outcome, robust or not (``outcome <attack>``),
    beside both accuracies (``fp32 <attack>``, ``<precision> <attack>``) so a bias shows, not only a
    disagreement.
    """
    full, reduced = targets(model), targets(with_precision(model, precision))
    rows: dict[str, dict[str, float]] = {}
    for name, target in full.items():
        low = reduced[name]
        row: dict[str, float] = {"samples": float(x.shape[0])}
        row["predictions"] = _mean(_predict(target, x, batch_size) == _predict(low, x, batch_size))
        for attack_name, attack in attacks.items():
            ok32 = _robust(target, attack, x, y, batch_size)
            ok_low = _robust(low, attack, x, y, batch_size)
            row[f"outcome {attack_name}"] = _mean(ok32 == ok_low)
            row[f"fp32 {attack_name}"] = _mean(ok32)
            row[f"{precision} {attack_name}"] = _mean(ok_low)
        rows[name] = row
    return rows


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])


def _robust(model: nn.Module, attack: Callable, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    parts = []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = attack(model, xb, yb)
        with torch.no_grad():
            parts.append(model(x_adv).argmax(1) == yb)
    return torch.cat(parts)


def _mean(mask: torch.Tensor) -> float:
    return float(mask.float().mean()) if mask.numel() else float("nan")
