"""HopSkipJumpAttack (Chen, Jordan, Wainwright 2020), decision-based, l_inf, batched over samples.

Only the model's top-1 decision is used. Each iteration (i) estimates the gradient direction at
a point on the decision boundary from the decisions on ``num_evals`` random perturbations,
(ii) steps along its sign with a geometrically shrinking step size until the point is
adversarial again, (iii) binary-searches back to the boundary toward the clean input. Every
model evaluation of one input counts as one query of its sample, and no sample ever exceeds
``max_queries``. The returned point is projected into the eps-ball, so the accuracy of the
model on it is the accuracy at ``eps``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..validation import check_nonnegative, check_positive_int
from .base import Attack, project


class HopSkipJump(Attack):
    """Untargeted l_inf HopSkipJump with a per-sample query budget.

    Args:
        eps: radius at which accuracy is measured (the final projection).
        max_queries: query budget per sample (the paper: 26K for MNIST and CIFAR-10, 12K for ImageNet).
        init_evals: the first gradient estimate's batch; iteration ``t`` uses ``init_evals * sqrt(t)``.
        max_evals: the cap on that batch.
        gamma: sets the binary-search tolerance ``theta = gamma / d^2`` (as the reference implementation).
        init_tries: random uniform draws to find a first adversarial point.
        stop_at_eps: stop a sample once its adversarial point is within ``eps`` (saves queries; same accuracy).
        max_iters: cap on iterations (the budget usually ends the attack first).
        chunk: largest batch sent to the model at once.
        score: ``"projected"``: return the best point projected into the eps-ball (the model's
            accuracy on it is the accuracy at ``eps``); ``"distance"``: the paper's official scoring
            (``--protocol paper``), a minimum-distance attack whose sample counts as broken iff the
            distance found is at most ``eps``: the point itself where it is, the clean input otherwise.

    After a call, ``self.queries`` holds the queries used per sample and ``self.distances``
    the l_inf distance of the best adversarial point found (inf where none was found).
    """

    name = "hsja"

    def __init__(
        self,
        eps: float,
        max_queries: int = 26000,
        init_evals: int = 100,
        max_evals: int = 10000,
        gamma: float = 1.0,
        init_tries: int = 100,
        stop_at_eps: bool = False,
        max_iters: int = 1000,
        chunk: int = 1024,
        score: str = "projected",
        bounds=(0.0, 1.0),
        seed: int = 0,
    ) -> None:
        super().__init__(eps, bounds or (0.0, 1.0), seed, targeted=False)
        if score not in ("projected", "distance"):
            raise ValueError(f"score must be 'projected' or 'distance', got {score!r}")
        self.score = score
        self.max_queries = check_positive_int("max_queries", max_queries)
        self.init_evals = check_positive_int("init_evals", init_evals)
        self.max_evals = check_positive_int("max_evals", max_evals)
        self.gamma = check_nonnegative("gamma", gamma)
        self.init_tries = check_positive_int("init_tries", init_tries)
        self.stop_at_eps = bool(stop_at_eps)
        self.max_iters = check_positive_int("max_iters", max_iters)
        self.chunk = check_positive_int("chunk", chunk)
        self.queries: torch.Tensor | None = None
        self.distances: torch.Tensor | None = None
        self.history: list[torch.Tensor] = []

    # -- queries ---------------------------------------------------------------------------
    def _is_adversarial(self, model: nn.Module, points: torch.Tensor, owner: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Decisions for ``points`` belonging to samples ``owner``; counts one query per point."""
        queries = self._spent()
        queries.index_add_(0, owner, torch.ones_like(owner))
        if bool((queries > self.max_queries).any()):
            raise RuntimeError("HopSkipJump spent more than max_queries on a sample (internal error)")
        with torch.no_grad():
            preds = torch.cat([model(points[i : i + self.chunk]).argmax(1) for i in range(0, points.shape[0], self.chunk)])
        return preds != y[owner]

    def _spent(self) -> torch.Tensor:
        if self.queries is None:
            raise RuntimeError("HopSkipJump counts queries only inside perturb (internal error)")
        return self.queries

    def _remaining(self) -> torch.Tensor:
        return self.max_queries - self._spent()

    def _box(self) -> tuple[float, float]:
        return self.bounds or (0.0, 1.0)  # never None here: __init__ gives HopSkipJump a box

    # -- the attack ------------------------------------------------------------------------
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """HopSkipJump on every sample at once, each within its query budget; the best point projected into the eps-ball."""
        n = x.shape[0]
        self.queries = torch.zeros(n, dtype=torch.long, device=x.device)
        self.history = []
        gen = self.generator(x.device)
        low, high = self._box()
        dim = x[0].numel()
        theta = self.gamma / dim**2
        everyone = torch.arange(n, device=x.device)

        adv = x.clone()
        dist = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
        found = self._is_adversarial(model, x, everyone, y)  # misclassified already: distance 0
        dist[found] = 0.0

        # Initialization: random uniform points until one is adversarial, then to the boundary.
        for _ in range(self.init_tries):
            idx = everyone[~found & (self._remaining() > 0)]
            if idx.numel() == 0:
                break
            cand = torch.rand((idx.numel(), *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype) * (high - low) + low
            ok = self._is_adversarial(model, cand, idx, y)
            adv[idx[ok]], found[idx[ok]] = cand[ok], True
        start = everyone[found & (dist > 0)]
        adv[start] = self._binary_search(model, x, y, adv[start], start, theta)
        dist = torch.where(found, (adv - x).flatten(1).abs().amax(1), dist)
        self.history.append(dist.clone())

        for t in range(1, self.max_iters + 1):
            self.report(t, self.max_iters, "iteration")
            active = found & (dist > 0) & (self._remaining() > 2)
            if self.stop_at_eps:
                active &= dist > self.eps
            idx = everyone[active]
            if idx.numel() == 0:
                break
            # Probe radius of the gradient estimate (reference implementation: 0.1 of the range, then d*theta*dist).
            delta = (
                torch.full((idx.numel(),), 0.1 * (high - low), device=x.device, dtype=x.dtype)
                if t == 1
                else dim * theta * dist[idx]
            )
            num_evals = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
            direction = self._estimate_direction(model, y, adv, idx, delta, num_evals, gen)
            candidate = self._step(model, x, y, adv, idx, direction.sign(), dist[idx], t)
            moved = idx[candidate["ok"]]
            new = self._binary_search(model, x, y, candidate["points"], moved, theta)
            new_dist = (new - x[moved]).flatten(1).abs().amax(1) if moved.numel() else new.new_zeros(0)
            closer = new_dist < dist[moved]  # never accept a point farther than the current best
            adv[moved[closer]], dist[moved[closer]] = new[closer], new_dist[closer]
            self.history.append(dist.clone())

        self.distances = dist
        if self.score == "distance":
            return torch.where((dist <= self.eps).view(-1, *[1] * (x.dim() - 1)), adv, x)
        return project(adv, x, self.eps, self.bounds)

    def _estimate_direction(self, model, y, adv, idx, delta, num_evals, gen) -> torch.Tensor:
        """Monte-Carlo estimate of the boundary's normal at ``adv[idx]`` from ``num_evals`` decisions each."""
        k = torch.clamp(self._remaining()[idx] - 2, max=num_evals)  # keep 2 queries for the step and search
        owner_pos = torch.repeat_interleave(torch.arange(idx.numel(), device=adv.device), k)
        base = adv[idx][owner_pos]
        noise = torch.rand(base.shape, generator=gen, device=adv.device, dtype=adv.dtype) * 2 - 1
        noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (adv.dim() - 1))
        step = delta[owner_pos].view(-1, *[1] * (adv.dim() - 1))
        perturbed = (base + step * noise).clamp(*self._box())
        noise = (perturbed - base) / step.clamp_min(1e-12)
        sign = self._is_adversarial(model, perturbed, idx[owner_pos], y).to(adv.dtype) * 2 - 1
        counts = k.to(adv.dtype).clamp_min(1)
        mean_sign = torch.zeros(idx.numel(), device=adv.device, dtype=adv.dtype).index_add_(0, owner_pos, sign) / counts
        # Baseline: subtract each sample's mean decision unless all decisions agree (then keep the sign).
        all_same = mean_sign.abs() == 1
        centred = torch.where(all_same[owner_pos], sign, sign - mean_sign[owner_pos])
        grad = torch.zeros_like(adv[idx]).index_add_(0, owner_pos, centred.view(-1, *[1] * (adv.dim() - 1)) * noise)
        return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (adv.dim() - 1))

    def _step(self, model, x, y, adv, idx, update, dist, t) -> dict:
        """Geometric step-size search: halve from ``dist / sqrt(t)`` until the step lands adversarial."""
        size = dist / math.sqrt(t)
        points = adv[idx].clone()
        ok = torch.zeros(idx.numel(), dtype=torch.bool, device=x.device)
        pending = torch.ones_like(ok)
        for _ in range(30):
            pending &= self._remaining()[idx] > 1
            pos = pending.nonzero().squeeze(1)
            if pos.numel() == 0:
                break
            cand = (adv[idx[pos]] + size[pos].view(-1, *[1] * (x.dim() - 1)) * update[pos]).clamp(*self._box())
            success = self._is_adversarial(model, cand, idx[pos], y)
            points[pos[success]], ok[pos[success]] = cand[success], True
            pending[pos[success]] = False
            size[pos[~success]] /= 2
        return {"points": points[ok], "ok": ok}

    def _binary_search(self, model, x, y, pts, idx, theta) -> torch.Tensor:
        """l_inf binary search between ``x[idx]`` and the adversarial ``pts`` (one per idx) for the boundary."""
        orig = x[idx]
        highs = (pts - orig).flatten(1).abs().amax(1)
        lows = torch.zeros_like(highs)
        # A zero-length interval (the point equals x) needs no search; guarding the ratio avoids 0/0 = NaN.
        thresholds = torch.clamp(torch.minimum(highs * theta, torch.full_like(highs, theta)), min=1e-12)
        for _ in range(64):
            pending = ((highs - lows) / thresholds > 1) & (self._remaining()[idx] > 0)
            pos = pending.nonzero().squeeze(1)
            if pos.numel() == 0:
                break
            mids = (highs[pos] + lows[pos]) / 2
            radius = mids.view(-1, *[1] * (x.dim() - 1))
            cand = torch.min(torch.max(pts[pos], orig[pos] - radius), orig[pos] + radius)
            success = self._is_adversarial(model, cand, idx[pos], y)
            highs[pos[success]] = mids[success]
            lows[pos[~success]] = mids[~success]
        radius = highs.view(-1, *[1] * (x.dim() - 1))
        return torch.min(torch.max(pts, orig - radius), orig + radius)
