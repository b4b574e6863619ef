"""Fast Gradient Sign Method (Goodfellow et al. 2015): eq. 1 (untargeted) and eq. 2 (targeted) of the paper."""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import Attack, project
from .losses import attack_objective, check_loss


class FGSM(Attack):
    """One step of size ``eps`` along the sign of the loss gradient (away from ``y``, or toward a target)."""

    name = "fgsm"

    def __init__(self, eps: float, loss: str = "ce", targeted: bool = False, bounds=(0.0, 1.0), seed: int = 0) -> None:
        super().__init__(eps, bounds, seed, targeted)
        self.loss = check_loss(loss)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One signed-gradient step of ``eps`` (eq. 2), clipped to the bounds."""
        x_in = x.clone().requires_grad_(True)
        with torch.enable_grad():
            objective = attack_objective(self.loss, model(x_in), y, self.targeted)
            (grad,) = torch.autograd.grad(objective.sum(), x_in)
        return project(x + self.eps * grad.sign(), x, self.eps, self.bounds)
