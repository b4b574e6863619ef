"""Per-sample attack losses (never batch-summed before the caller decides, so batch size cannot matter)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("ce", "margin")


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample, shape (N,). On log-probabilities (the defense's log q) it is -log q_y."""
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin ``max_{j != y} z_j - z_y`` per sample; > 0 means misclassified."""
    true = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.max(1).values - true


def check_loss(name: str) -> str:
    """Return ``name`` if it is a known attack loss, else raise ValueError naming the choices."""
    if name not in LOSSES:
        raise ValueError(f"unknown attack loss {name!r}; expected one of: {', '.join(LOSSES)}")
    return name


def attack_objective(name: str, logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """The quantity an attack maximizes, per sample: the loss of ``y`` (untargeted) or minus it (targeted)."""
    loss = cross_entropy(logits, y) if check_loss(name) == "ce" else margin(logits, y)
    return -loss if targeted else loss
