"""Per-sample attack losses (never batch-summed before the caller decides, so batch size cannot matter)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("ce", "margin", "dlr")


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample, shape (N,). On log-probabilities (the defense's log q) it is -log q_y."""
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin ``max_{j != y} z_j - z_y`` per sample; > 0 means misclassified."""
    true = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    # The true class masked by scatter: F.one_hot checks the labels on the host on CPU (advpnml.accel.graphs.host_syncs).
    others = logits.masked_fill(torch.zeros_like(logits, dtype=torch.bool).scatter_(1, y.unsqueeze(1), True), float("-inf"))
    return others.max(1).values - true


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020), per sample, to maximize:
    ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)``, with z sorted decreasingly. Invariant to shifting and
    scaling the logits, so it does not saturate where cross-entropy does. Needs >= 3 classes."""
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, got {logits.shape[1]}")
    top = logits.sort(dim=1, descending=True).values
    return margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020), to maximize: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``. Needs >= 4 classes."""
    if logits.shape[1] < 4:
        raise ValueError(f"the targeted DLR loss needs at least 4 classes, got {logits.shape[1]}")
    top = logits.sort(dim=1, descending=True).values
    gap = logits.gather(1, target.unsqueeze(1)).squeeze(1) - logits.gather(1, y.unsqueeze(1)).squeeze(1)
    return gap / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def check_loss(name: str) -> str:
    """Return ``name`` if it is a known attack loss, else raise ValueError naming the choices."""
    if name not in LOSSES:
        raise ValueError(f"unknown attack loss {name!r}; expected one of: {', '.join(LOSSES)}")
    return name


def attack_objective(name: str, logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """The quantity an attack maximizes, per sample: the loss of ``y`` (untargeted) or minus it (targeted)."""
    loss = {"ce": cross_entropy, "margin": margin, "dlr": dlr}[check_loss(name)](logits, y)
    return -loss if targeted else loss
