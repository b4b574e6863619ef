"""Square Attack (Andriushchenko, Croce, Flammarion, Hein 2020), l_inf, score-based, batched.

It needs only the model's scores, never a gradient, so it cannot be fooled by masked gradients:
the black-box column of AutoAttack. Starting from vertical stripes of +-eps, each iteration
redraws a random square window of each sample's perturbation to +-eps per channel and keeps it
if the margin loss fell. The window shrinks on AutoAttack's schedule. Every model evaluation of
one input is one query; no sample exceeds ``max_queries``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..validation import check_positive_int
from .base import Attack
from .losses import margin

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def window_fraction(p_init: float, iteration: int, n_iters: int) -> float:
    """Fraction of the image the square covers at ``iteration`` (AutoAttack's schedule, rescaled to 10,000 iterations)."""
    it = int(iteration / max(n_iters, 1) * 10000)
    divisor = 512
    for bound, d in _SCHEDULE:
        if it <= bound:
            divisor = d
            break
    return p_init / divisor


class Square(Attack):
    """Untargeted l_inf Square Attack on images (N, C, H, W).

    Args:
        eps: l_inf radius. max_queries: per-sample query budget (AutoAttack: 5,000).
        p_init: initial fraction of pixels in the square (AutoAttack: 0.8).

    After a call ``self.queries`` holds the queries used per sample.
    """

    name = "square"

    def __init__(self, eps: float, max_queries: int = 5000, p_init: float = 0.8, bounds=(0.0, 1.0), seed: int = 0) -> None:
        super().__init__(eps, bounds, seed)
        self.max_queries = check_positive_int("max_queries", max_queries)
        self.p_init = float(p_init)
        self.queries: torch.Tensor | None = None

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.bounds is None else x.clamp(*self.bounds)

    def _margin(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return -margin(model(x), y)  # > 0 while correctly classified; the attack drives it below 0

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Square's random square updates on ``x``, scored by the model's margin, within the query budget."""
        if x.dim() != 4:
            raise ValueError(f"Square needs image inputs of shape (N, C, H, W), got shape {tuple(x.shape)}")
        gen = self.generator(x.device)
        n, c, h, w = x.shape
        signs = torch.randint(0, 2, (n, c, 1, w), generator=gen, device=x.device).to(x.dtype) * 2 - 1
        x_best = self._clip(x + self.eps * signs)
        loss = self._margin(model, x_best, y)
        self.queries = torch.ones(n, dtype=torch.long, device=x.device)
        n_iters = self.max_queries - 1
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        for i in range(n_iters):
            if i % 50 == 0:
                self.report(i + 1, self.max_queries, "query")
            active = (loss > 0).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            side = max(int(round(math.sqrt(window_fraction(self.p_init, i, n_iters) * h * w))), 1)
            side = min(side, h - 1, w - 1) if min(h, w) > 1 else 1
            m = active.numel()
            top = torch.randint(0, h - side + 1, (m,), generator=gen, device=x.device)
            left = torch.randint(0, w - side + 1, (m,), generator=gen, device=x.device)
            in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
            in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
            window = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)  # (m, 1, h, w)
            new_signs = torch.randint(0, 2, (m, c, 1, 1), generator=gen, device=x.device).to(x.dtype) * 2 - 1
            xa = x[active]
            delta = torch.where(window, self.eps * new_signs, x_best[active] - xa)
            candidate = self._clip(xa + delta)
            new_loss = self._margin(model, candidate, y[active])
            self.queries[active] += 1
            accept = new_loss < loss[active]
            x_best[active[accept]] = candidate[accept]
            loss[active[accept]] = new_loss[accept]
        return x_best
