"""Projected Gradient Descent (Madry et al. 2018), eq. 3 of the paper, with restarts.

Run on :class:`advpnml.AdversarialPnml` it is the paper's adaptive attack: the defense's
refinement has an identity backward (BPDA), so the gradient flows through all hypotheses.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..validation import check_nonnegative, check_positive_int
from .base import Attack, project
from .losses import attack_objective, check_loss


class PGD(Attack):
    """l_inf PGD with random start and restarts, keeping each sample's strongest iterate.

    Per sample, over every iterate of every restart (the start included), the attack keeps a
    point that fools the model if one was found, and among equals the one with the highest
    loss (the paper: "the sample with the highest loss is chosen"). Restarts are therefore
    chosen per sample, never by a batch average.

    Args:
        eps: l_inf radius. steps: iterations per restart. step_size: alpha of eq. 3.
        restarts: independent random starts. random_start: start uniformly in the eps-ball.
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (Carlini-Wagner). targeted: ``y`` are targets.
        early_stop: skip later restarts for samples already fooled (same accuracy, less work).
    """

    name = "pgd"

    def __init__(
        self,
        eps: float,
        steps: int = 40,
        step_size: float = 0.01,
        restarts: int = 1,
        random_start: bool = True,
        loss: str = "ce",
        targeted: bool = False,
        early_stop: bool = False,
        bounds=(0.0, 1.0),
        seed: int = 0,
    ) -> None:
        super().__init__(eps, bounds, seed, targeted)
        self.steps = check_positive_int("steps", steps)
        self.step_size = check_nonnegative("step_size", step_size)
        self.restarts = check_positive_int("restarts", restarts)
        self.random_start = bool(random_start)
        self.loss = check_loss(loss)
        self.early_stop = bool(early_stop)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gen = self.generator(x.device)
        best = x.clone()
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        best_fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            # Noise is drawn for the whole batch every restart so a sample's start does not depend on the others' fate.
            noise = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * self.eps
            todo = ~best_fooled if self.early_stop else torch.ones_like(best_fooled)
            idx = todo.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xs, ys = x[idx], y[idx]
            x_adv = project(xs + noise[idx], xs, self.eps, self.bounds) if self.random_start else xs.clone()
            adv, loss, fooled = self._run(model, xs, ys, x_adv)
            better = (fooled & ~best_fooled[idx]) | ((fooled == best_fooled[idx]) & (loss > best_loss[idx]))
            sel = idx[better]
            best[sel], best_loss[sel], best_fooled[sel] = adv[better], loss[better], fooled[better]
        return best

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor):
        """One restart: returns the per-sample best iterate, its loss and whether it fools the model."""
        best, best_loss = x_adv.clone(), torch.full((x.shape[0],), float("-inf"), device=x.device)
        best_fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for step in range(self.steps + 1):
            x_adv = x_adv.detach().requires_grad_(step < self.steps)
            with torch.enable_grad() if step < self.steps else torch.no_grad():
                logits = model(x_adv)
                objective = attack_objective(self.loss, logits, y, self.targeted)
                if step < self.steps:
                    (grad,) = torch.autograd.grad(objective.sum(), x_adv)
            with torch.no_grad():
                fooled = self.fooled(logits, y)
                better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (objective > best_loss))
                best[better], best_loss[better], best_fooled[better] = x_adv[better], objective[better], fooled[better]
                if step < self.steps:
                    x_adv = project(x_adv + self.step_size * grad.sign(), x, self.eps, self.bounds)
        return best, best_loss, best_fooled
