"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"), l_inf, with the cross-entropy or DLR loss, and APGD-T.

APGD needs no step size: it starts at 2 eps, adds momentum (alpha = 0.75), and at checkpoints
(22% of the budget, then shrinking intervals) halves the step and restarts from the best point of
each sample whose loss stalled or oscillated. APGD-T runs the targeted DLR loss toward each of
the top ``n_targets`` other classes in turn. Both keep, per sample, the highest-loss point that
fools the model (else the highest-loss point), and skip samples already fooled in later restarts or
targets. Croce et al. (ICML 2022) used APGD-T through test-time defenses like this one.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..validation import check_positive_int
from .base import Attack, project
from .losses import attack_objective, check_loss, dlr_targeted


def checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step: the paper's p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), in whole iterations as AutoAttack counts them
    (first interval 22% of the budget, each next one 3% shorter, never under 6%)."""
    interval, shrink, shortest = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks, at = [], interval
    while at < steps:
        marks.append(at)
        interval = max(interval - shrink, shortest)
        at += interval
    return marks


class APGD(Attack):
    """Untargeted APGD (APGD-CE, APGD-DLR) with per-sample restarts.

    Args:
        eps: l_inf radius. steps: iterations per restart (AutoAttack: 100). restarts: random starts.
        loss: ``"ce"``, ``"dlr"`` or ``"margin"``. rho: oscillation threshold of the step-size rule (0.75).
        early_stop: ``True`` or ``"restarts"``: later restarts (and targets) only for samples not yet fooled, each
            kept point the highest-loss fooling iterate of its run (deeper points transfer better); ``"steps"``:
            also leave the run at the first fooling iterate, so later steps compute the samples still undecided
            only (the same success on the attacked model for less work: for attacks scored on the model they
            attack); ``False``: every sample runs every restart.
    """

    name = "apgd"

    def __init__(
        self,
        eps: float,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        rho: float = 0.75,
        early_stop: bool | str = True,
        bounds=(0.0, 1.0),
        seed: int = 0,
    ) -> None:
        super().__init__(eps, bounds, seed)
        self.steps = check_positive_int("steps", steps)
        self.restarts = check_positive_int("restarts", restarts)
        self.loss = check_loss(loss)
        self.rho = float(rho)
        if early_stop not in (False, True, "restarts", "steps"):
            raise ValueError(f"early_stop must be false, true, 'restarts' or 'steps', got {early_stop!r}")
        self.early_stop = "restarts" if early_stop is True else early_stop

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """APGD on ``x`` (detached, eval mode): each sample's best point over every restart."""
        gen = self.generator(x.device)
        best = x.clone()
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        targets = self._targets(model, x, y)
        for t, target in enumerate(targets):
            for r in range(self.restarts):
                self._where = (f"target {t + 1}/{len(targets)}, " if target is not None else "") + (
                    f"restart {r + 1}/{self.restarts}, " if self.restarts > 1 else ""
                )
                start = self._random_start(x, gen)  # drawn for the whole batch: a sample's start never depends on others
                idx = (~fooled).nonzero().squeeze(1) if self.early_stop else torch.arange(x.shape[0], device=x.device)
                if idx.numel() == 0:
                    return best
                adv, loss, hit = self._run(model, x[idx], y[idx], start[idx], None if target is None else target[idx])
                better = (hit & ~fooled[idx]) | ((hit == fooled[idx]) & (loss > best_loss[idx]))
                sel = idx[better]
                best[sel], best_loss[sel], fooled[sel] = adv[better], loss[better], hit[better]
        return best

    def _targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor | None]:
        return [None]

    def start_point(self, x: torch.Tensor) -> torch.Tensor:
        """The first restart's starting point, as :meth:`perturb` draws it (a fresh generator seeded with ``seed``)."""
        return self._random_start(x, self.generator(x.device))

    def from_start(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """One untargeted run from ``start`` without input checks or mode changes: no host synchronization, so a
        CUDA graph can capture it (:class:`advpnml.accel.graphs.GraphedAttack`). With one restart,
        ``from_start(m, x, y, start_point(x))`` is ``perturb(m, x, y)``."""
        if type(self)._targets is not APGD._targets:
            raise ValueError(f"from_start runs the untargeted APGD; {type(self).__name__} loops over targets")
        if self.early_stop == "steps":
            raise ValueError('from_start runs every step on every sample; early_stop="steps" needs perturb')
        return self._run(model, x, y, start, None)[0]

    def _objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return attack_objective(self.loss, logits, y, targeted=False)

    def _random_start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        t = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
        scale = t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        return project(x + self.eps * t / scale, x, self.eps, self.bounds)  # AutoAttack's start: one coordinate on the sphere

    def _loss_grad(self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x_adv)
            loss = self._objective(logits, y, target)
            (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        return loss.detach(), logits.detach(), grad.detach()

    def _step_loss_grad(self, model, x_adv, y, target, fooled, loss, logits, grad):
        """The loss, logits and gradient at ``x_adv``: for every sample, or with ``early_stop="steps"`` for the samples
        not yet ``fooled`` only, the others keeping their last values (they are decided; a fooled sample's kept point
        never changes again). All ``None`` when every sample is fooled."""
        if self.early_stop != "steps":
            return self._loss_grad(model, x_adv, y, target)
        todo = (~fooled).nonzero().squeeze(1)
        if todo.numel() == fooled.numel():
            return self._loss_grad(model, x_adv, y, target)
        if todo.numel() == 0:
            return None, None, None
        part = self._loss_grad(model, x_adv[todo], y[todo], None if target is None else target[todo])
        loss, logits, grad = loss.clone(), logits.clone(), grad.clone()
        loss[todo], logits[todo], grad[todo] = part
        return loss, logits, grad

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, target: torch.Tensor | None):
        """One APGD run; returns per sample the point to keep, its loss, and whether it fools the model."""
        n = x.shape[0]
        view = (-1, *[1] * (x.dim() - 1))
        step = torch.full((n,), 2.0 * self.eps, device=x.device, dtype=x.dtype)
        loss, logits, grad = self._loss_grad(model, x_adv, y, target)
        fooled = self.fooled(logits, y)
        x_fool, x_best, grad_best, loss_best = x_adv.clone(), x_adv.clone(), grad.clone(), loss.clone()
        loss_fool = torch.where(fooled, loss, torch.full_like(loss, float("-inf")))
        history = [loss]
        marks = set(checkpoints(self.steps))
        last_mark, loss_best_at_mark = 0, loss_best.clone()
        reduced_at_mark = torch.zeros(n, dtype=torch.bool, device=x.device)
        x_prev = x_adv
        for i in range(self.steps):
            self.report(i, self.steps, "step", getattr(self, "_where", ""))
            with torch.no_grad():
                momentum = 0.75 if i > 0 else 1.0
                z = project(x_adv + step.view(view) * grad.sign(), x, self.eps, self.bounds)
                x_next = project(x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_prev), x, self.eps, self.bounds)
                x_prev, x_adv = x_adv, x_next
            loss, logits, grad = self._step_loss_grad(model, x_adv, y, target, fooled, loss, logits, grad)
            if loss is None:
                break
            with torch.no_grad():
                # Among fooling iterates keep the highest-loss one: deeper points transfer better.
                # Selections by torch.where, not boolean indexing: the same values without a host sync per step,
                # so a restart is one fixed sequence of kernels a CUDA graph can capture (advpnml.accel.graphs).
                hit = self.fooled(logits, y) & (loss > loss_fool)
                x_fool, loss_fool, fooled = (
                    torch.where(hit.view(view), x_adv, x_fool),
                    torch.where(hit, loss, loss_fool),
                    fooled | hit,
                )
                improved = loss > loss_best
                x_best = torch.where(improved.view(view), x_adv, x_best)
                grad_best = torch.where(improved.view(view), grad, grad_best)
                loss_best = torch.where(improved, loss, loss_best)
                history.append(loss)
                if i + 1 in marks:
                    window = i + 1 - last_mark
                    increases = sum((history[t] > history[t - 1]).to(x.dtype) for t in range(len(history) - window, len(history)))
                    oscillating = increases <= self.rho * window
                    stalled = ~reduced_at_mark & (loss_best_at_mark >= loss_best)
                    reduce = oscillating | stalled
                    step = torch.where(reduce, step / 2, step)
                    x_adv = torch.where(reduce.view(view), x_best, x_adv)
                    grad = torch.where(reduce.view(view), grad_best, grad)
                    reduced_at_mark, loss_best_at_mark, last_mark = reduce, loss_best.clone(), i + 1
        keep = torch.where(fooled.view(view), x_fool, x_best)
        return keep, loss_best, fooled


class APGDT(APGD):
    """APGD-T: the targeted DLR loss toward each of the ``n_targets`` most likely other classes in turn.

    Success is untargeted (the prediction leaves ``y``), as in AutoAttack; the targets only give
    the attack directions that cross-entropy misses.
    """

    name = "apgd-t"

    def __init__(
        self,
        eps: float,
        steps: int = 100,
        n_targets: int = 9,
        restarts: int = 1,
        rho: float = 0.75,
        early_stop: bool | str = True,
        bounds=(0.0, 1.0),
        seed: int = 0,
    ) -> None:
        super().__init__(eps, steps, restarts, "dlr", rho, early_stop, bounds, seed)
        self.n_targets = check_positive_int("n_targets", n_targets)

    def _targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor | None]:
        with torch.no_grad():
            logits = model(x)
        order = logits.masked_fill(nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf")).argsort(1, descending=True)
        return [order[:, t] for t in range(min(self.n_targets, logits.shape[1] - 1))]

    def _objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if target is None:
            raise ValueError("APGD-T needs a target class per sample (internal error)")
        return dlr_targeted(logits, y, target)
