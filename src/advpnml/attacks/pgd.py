"""Projected Gradient Descent (Madry et al. 2018), eq. 3 of the paper, with restarts.

Run on :class:`advpnml.AdversarialPnml` it is the paper's adaptive attack: the defense's
refinement has an identity backward (BPDA), so the gradient flows through all hypotheses.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..validation import check_nonnegative, check_positive_int
from .base import Attack, project
from .losses import attack_objective, check_loss

#: How a restart's result is chosen: ours, and the official code's (see :class:`PGD`).
SELECTIONS = ("best", "last-highest-loss")


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
        early_stop: ``False``; ``True`` or ``"restarts"``: samples already fooled skip later restarts
            (each kept point is still the highest-loss fooling iterate of its restart: the right
            mode for examples that will be *transferred*); ``"steps"``: also leave the batch at the
            first fooling iterate (least work, same accuracy on the attacked model, but points just
            across the boundary transfer worse: use it for attacks evaluated on the model they target).
        keep_best: return each sample's best iterate (costs one extra forward per restart, to judge
            the last iterate). ``False`` with one restart returns the last iterate, as Madry et al.
            and torchattacks do: the same work as theirs, for speed comparisons.
        selection: ``"best"`` (above: fooling iterates first, then the highest loss, over every
            iterate) or ``"last-highest-loss"``, the paper's official code (``--protocol paper``):
            each restart ends at its last iterate and, per sample, the restart with the highest
            final loss is kept, whether or not it fools the model. ``early_stop`` and ``keep_best``
            do not apply to it.
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
        early_stop: bool | str = False,
        keep_best: bool = True,
        selection: str = "best",
        bounds=(0.0, 1.0),
        seed: int = 0,
    ) -> None:
        super().__init__(eps, bounds, seed, targeted)
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        self.selection = selection
        self.steps = check_positive_int("steps", steps)
        self.step_size = check_nonnegative("step_size", step_size)
        self.restarts = check_positive_int("restarts", restarts)
        self.random_start = bool(random_start)
        self.loss = check_loss(loss)
        if early_stop not in (False, True, "restarts", "steps"):
            raise ValueError(f"early_stop must be false, true, 'restarts' or 'steps', got {early_stop!r}")
        self.early_stop = "restarts" if early_stop is True else early_stop
        self.keep_best = bool(keep_best)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """PGD with restarts on ``x``: per sample, the strongest iterate (or the official code's restart rule)."""
        gen = self.generator(x.device)
        if self.selection == "last-highest-loss":
            return self._highest_final_loss(model, x, y, gen)
        if self.restarts == 1:  # nothing to choose between: no gathers, no masks, no host syncs
            return self._run(model, x, y, self._start(x, gen))[0]
        best = x.clone()
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
        best_fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            start = self._start(x, gen)
            todo = ~best_fooled if self.early_stop else torch.ones_like(best_fooled)
            idx = todo.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            adv, loss, fooled = self._run(model, x[idx], y[idx], start[idx])
            better = (fooled & ~best_fooled[idx]) | ((fooled == best_fooled[idx]) & (loss > best_loss[idx]))
            sel = idx[better]
            best[sel], best_loss[sel], best_fooled[sel] = adv[better], loss[better], fooled[better]
        return best

    def start_point(self, x: torch.Tensor) -> torch.Tensor:
        """The first restart's starting point, as :meth:`perturb` draws it (from a fresh generator seeded with ``seed``)."""
        return self._start(x, self.generator(x.device))

    def from_start(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """One restart from ``start`` without input checks or mode changes (the caller puts ``model`` in eval mode):
        with one restart and ``early_stop`` off it makes no host synchronization, so a CUDA graph can capture it
        (:class:`advpnml.accel.graphs.GraphedStep`). ``from_start(m, x, y, start_point(x))`` is ``perturb(m, x, y)``."""
        if self.restarts != 1 or self.early_stop or self.selection != "best":
            raise ValueError(
                f"from_start runs one restart of the 'best' selection without early stop; this PGD has "
                f"restarts={self.restarts}, early_stop={self.early_stop!r}, selection={self.selection!r}"
            )
        return self._run(model, x, y, start)[0]

    def _highest_final_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The official code's rule: every restart's last iterate, per sample the one of highest final loss."""
        best, best_loss = x.clone(), torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
        for _ in range(self.restarts):
            last = self._last_iterate(model, x, y, self._start(x, gen))
            with torch.no_grad():
                loss = self._scores(model, last, y)[1]
            higher = loss > best_loss
            best = torch.where(higher.view(-1, *[1] * (x.dim() - 1)), last, best)
            best_loss = torch.where(higher, loss, best_loss)
        return best

    def _start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A restart's starting point for every sample: uniform in the eps-ball (inside the bounds), or ``x``."""
        # Drawn for the whole batch every restart, so a sample's start never depends on the others' fate.
        noise = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * self.eps
        return project(x + noise, x, self.eps, self.bounds) if self.random_start else x.clone()

    def _scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits that decide success, per-sample objective to maximize) at ``x``."""
        logits = model(x)
        return logits, attack_objective(self.loss, logits, y, self.targeted)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor):
        """One restart: returns the per-sample best iterate, its loss and whether it fools the model.

        With ``early_stop="steps"`` a sample leaves the batch at the first iterate that fools the
        model: later steps run on the undecided samples only.
        """
        n = x.shape[0]
        if not self.keep_best and self.restarts == 1 and self.early_stop != "steps":
            unjudged = torch.zeros(n, dtype=torch.bool, device=x.device)
            return self._last_iterate(model, x, y, x_adv), torch.zeros(n, device=x.device, dtype=x.dtype), unjudged
        best, best_loss = x_adv.clone(), torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype)
        best_fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        active = None  # None: every sample is still undecided (no gather/scatter copies)
        current = x_adv.detach()
        for step in range(self.steps + 1):
            self.report(step, self.steps, "step")
            last = step == self.steps
            if last and not self.keep_best and self.restarts == 1:
                if active is None:
                    return current, torch.zeros_like(best_loss), best_fooled
                best[active] = current[active]
                return best, best_loss.clamp_min(0), best_fooled
            xa = (current if active is None else current[active]).detach().requires_grad_(not last)
            ya, xs = (y, x) if active is None else (y[active], x[active])
            with torch.enable_grad() if not last else torch.no_grad():
                logits, objective = self._scores(model, xa, ya)
                if not last:
                    (grad,) = torch.autograd.grad(objective.sum(), xa)
            with torch.no_grad():
                fooled = self.fooled(logits, ya)
                if active is None:
                    better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (objective > best_loss))
                    best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), xa.detach(), best)
                    best_loss, best_fooled = torch.where(better, objective, best_loss), best_fooled | fooled
                else:
                    better = (fooled & ~best_fooled[active]) | ((fooled == best_fooled[active]) & (objective > best_loss[active]))
                    sel = active[better]
                    best[sel], best_loss[sel], best_fooled[sel] = xa[better].detach(), objective[better], fooled[better]
                if not last:
                    stepped = project(xa.detach() + self.step_size * grad.sign(), xs, self.eps, self.bounds)
                    if active is None:
                        current = stepped
                    else:
                        current[active] = stepped
                if self.early_stop == "steps" and fooled.any():
                    if active is None:
                        active = torch.arange(n, device=x.device)
                    active = active[~fooled]
                    if active.numel() == 0:
                        break
        return best, best_loss, best_fooled

    def _summed_objective(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The objective summed over the batch. For cross-entropy the sum is fused into the loss (one
        kernel fewer per step each way); the per-sample gradients are exactly those of the per-sample form."""
        if self.loss == "ce":
            total = F.cross_entropy(model(x), y, reduction="sum")
            return -total if self.targeted else total
        return self._scores(model, x, y)[1].sum()

    def _last_iterate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Plain Madry PGD, the last iterate: no per-step bookkeeping, and the eps-ball and the input
        box intersected once so each step ends in one clamp (the same points as :func:`project`)."""
        lo, hi = x - self.eps, x + self.eps
        if self.bounds is not None:
            lo, hi = lo.clamp_min(self.bounds[0]), hi.clamp_max(self.bounds[1])
        current = x_adv.detach()
        for step in range(self.steps):
            self.report(step, self.steps, "step")
            current.requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(self._summed_objective(model, current, y), current)
            current = torch.clamp(torch.add(current.detach(), grad.sign(), alpha=self.step_size), lo, hi)
        return current
