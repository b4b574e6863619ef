"""Test-time refinement by sign-gradient steps of the model itself, the mechanism the pNML shares with its siblings.

Hedge (:mod:`advpnml.defense.hedge`) and the anti-adversary (:mod:`advpnml.defense.anti_adversary`) move the input
``x`` by a few steps ``z <- z + a * sign(grad_z L(f(z)))`` (each its own loss ``L``), optionally projected onto an
l_inf ball around ``x`` and clipped to the input box, then classify ``f(z)``. ``sign`` is piecewise constant, so the
refined input depends on ``x`` only through the start, the projection and the clip. The backward modes are the same
as the pNML's (:class:`advpnml.defense.AdversarialPnml`), so one adaptive suite applies to every such defense:

- ``identity`` (BPDA, Athalye et al. 2018): ``z = x + (z - x).detach()``, gradient 1 everywhere. Croce et al. (ICML
  2022) attacked Hedge this way (``wu_2021/eval_tta.py``: its ``delta`` is a leaf, so ``x + delta`` passes the
  gradient straight to ``x``);
- ``clip = "exact"``: the steps replayed with ``sign`` detached and the projection and clip in the graph (0 where a
  value was clipped);
- ``second-order-*``: the steps differentiated through the gradient they follow (Hessian-vector products), ``sign``'s
  derivative replaced by a surrogate (:mod:`advpnml.defense.second_order`).

A defense with a random start (Hedge) draws from its own generator; the evaluation reseeds it per batch
(:meth:`GradientRefinement.reseed`) so a run is reproducible, attacks it under Expectation over Transformation
(:mod:`advpnml.defense.eot`) and scores it as the per-sample worst over ``score_runs`` draws.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn

from ..config import CLIP_BACKWARDS, SECOND_ORDER
from ..modes import frozen_parameters
from ..validation import check_bounds, check_inputs, check_nonnegative, check_positive_int
from .second_order import SURROGATES, limited

#: The backward modes a gradient refinement offers (``clamp`` is the pNML's official-code name for identity with the
#: exact clip, kept so a ``--protocol paper`` preset runs on every defense).
REFINEMENT_BACKWARDS = ("identity", "clamp", *SECOND_ORDER)


class GradientRefinement(nn.Module):
    """A classifier that refines its input by ``steps`` sign-gradient steps of ``step_size`` on :meth:`objective`
    (ascended), inside the l_inf ball of ``radius`` around the input (None: no ball) and the box ``bounds`` (None: no
    clip), from a uniform random start in the ball (clipped to the box) when ``random_start``, then classifies the
    refined input. Inputs outside ``domain`` are refused.

    ``forward`` returns the base model's logits on the refined input, shape (N, C). ``backward``/``clip`` choose how
    the refinement is differentiated (module docstring); ``eot_draws``: how many draws an attack averages
    (Expectation over Transformation) when the defense is random; ``score_runs``: how many draws a prediction must
    survive to count as correct. ``seed`` seeds the defense's own generator.
    """

    #: the defense's name in the registry (:data:`advpnml.defense.DEFENSES`)
    name = "refinement"

    def __init__(
        self,
        model: nn.Module,
        steps: int,
        step_size: float,
        radius: float | None = None,
        bounds: tuple[float, float] | None = (0.0, 1.0),
        random_start: bool = False,
        backward: str = "identity",
        clip: str = "straight",
        eot_draws: int = 1,
        score_runs: int = 1,
        seed: int = 0,
        check_inputs: bool = True,
        domain: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
        self.model = model
        self.steps = check_positive_int(f"{self.name} steps", steps)
        self.step_size = check_nonnegative(f"{self.name} step_size", step_size)
        self.radius = None if radius is None else check_nonnegative(f"{self.name} radius", radius)
        if random_start and radius is None:
            raise ValueError(f"{self.name}: a random start needs a radius to draw in")
        self.bounds = check_bounds(bounds)
        self.random_start = bool(random_start)
        if backward not in REFINEMENT_BACKWARDS:
            raise ValueError(f"{self.name} backward must be one of {', '.join(REFINEMENT_BACKWARDS)}, got {backward!r}")
        if clip not in CLIP_BACKWARDS:
            raise ValueError(f"{self.name} clip must be one of {', '.join(CLIP_BACKWARDS)}, got {clip!r}")
        self.backward, self.clip = backward, clip
        self.eot_draws = check_positive_int(f"{self.name} eot_draws", eot_draws)
        self.score_runs = check_positive_int(f"{self.name} score_runs", score_runs)
        self.check_inputs = check_inputs
        self.domain = check_bounds(domain)
        self.reseed(seed)

    @property
    def random(self) -> bool:
        """Whether two calls on the same input can differ (a random start)."""
        return self.random_start and self.radius is not None and self.radius > 0

    def reseed(self, seed: int) -> None:
        """Restart the defense's own generator at ``seed`` (the evaluation does it per batch); the copies
        :meth:`with_backward` made share it."""
        if not hasattr(self, "_rng"):
            self._rng: dict[str, Any] = {"seed": 0, "generators": {}}
        self._rng["seed"] = int(seed)
        self._rng["generators"].clear()

    def _generator(self, device: torch.device) -> torch.Generator:
        generators = self._rng["generators"]
        if device not in generators:
            generators[device] = torch.Generator(device=device).manual_seed(self._rng["seed"])
        return generators[device]

    def objective(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample quantity the refinement ascends, shape (N,); ``x`` is the unrefined batch."""
        raise NotImplementedError

    def prepare(self, x: torch.Tensor) -> None:
        """Anything the objective needs from the unrefined input (the anti-adversary's own prediction)."""

    def extra_repr(self) -> str:
        """Steps, step size, radius, bounds, random start and (when not the defaults) the backward."""
        return (
            f"steps={self.steps}, step_size={self.step_size:g}, radius={self.radius}, bounds={self.bounds}, "
            f"random_start={self.random_start}"
            + (f", backward={self.backward}" if self.backward != "identity" else "")
            + (f", clip={self.clip}" if self.clip != "straight" else "")
        )

    def settings(self) -> dict[str, object]:
        """The parameters that decide what it computes (the records' settings and the report's title)."""
        return {
            "steps": self.steps,
            "step_size": self.step_size,
            "radius": self.radius,
            "random_start": self.random_start,
            "eot_draws": self.eot_draws,
            "score_runs": self.score_runs,
        }

    def with_backward(
        self, backward: str | None = None, clip: str | None = None, refine_steps: int | None = None
    ) -> GradientRefinement:
        """The same defense differentiated another way (an attack column's ``backward``/``clip``), or refining only
        ``refine_steps`` steps (the shortened refinement an attack goes through; the full one is scored)."""
        other = copy.copy(self)
        other._modules = dict(self._modules)
        if backward is not None:
            if backward not in REFINEMENT_BACKWARDS:
                raise ValueError(f"{self.name} backward must be one of {', '.join(REFINEMENT_BACKWARDS)}, got {backward!r}")
            other.backward = backward
        if clip is not None:
            if clip not in CLIP_BACKWARDS:
                raise ValueError(f"{self.name} clip must be one of {', '.join(CLIP_BACKWARDS)}, got {clip!r}")
            other.clip = clip
        if refine_steps is not None:
            other.steps = check_positive_int(f"{self.name} refine_steps", refine_steps)
        return other

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The base model's logits on the refined input, (N, C)."""
        if self.check_inputs:
            check_inputs(x, self.domain)
        return self.model(self.refine(x))

    def refine(self, x: torch.Tensor) -> torch.Tensor:
        """The refined input, differentiable w.r.t. ``x`` as :attr:`backward` and :attr:`clip` say."""
        with frozen_parameters(self.model):
            self.prepare(x)
            start = x.detach()
            if self.random and self.radius is not None:
                noise = torch.rand(x.shape, generator=self._generator(x.device), device=x.device, dtype=x.dtype)
                start = self._project((2 * noise - 1) * self.radius + x.detach(), x.detach(), "exact")
            differentiated = torch.is_grad_enabled() and x.requires_grad  # else only the value is needed
            if differentiated and self.backward.startswith("second-order"):
                return self._steps(x, start - x.detach() + x, SURROGATES[self.backward].apply, self.clip)
            if differentiated and (self.backward == "clamp" or self.clip == "exact"):
                return self._steps(x, start - x.detach() + x, None, "exact")
            refined = self._steps(x.detach(), start.detach(), None, "exact")
            return x + (refined - x).detach()

    def _steps(self, x: torch.Tensor, z: torch.Tensor, surrogate, clip: str) -> torch.Tensor:
        """``steps`` steps from ``z``: with ``surrogate`` (second order) the gradient is part of the graph; without,
        each step's direction is a constant and only the projection and clip (``clip``) carry ``x``'s gradient."""
        for _ in range(self.steps):
            with torch.enable_grad():
                current = z if surrogate is not None else z.detach().requires_grad_(True)
                objective = self.objective(self.model(current), x).sum()
                (grad,) = torch.autograd.grad(objective, current, create_graph=surrogate is not None)
            direction = surrogate(grad) if surrogate is not None else grad.sign()
            z = self._project(z + self.step_size * direction, x, clip)
        return z

    def _project(self, z: torch.Tensor, x: torch.Tensor, clip: str) -> torch.Tensor:
        """``z`` projected onto the ball around ``x`` and clipped to the box, with their own derivative (``exact``)
        or passing the gradient straight through (``straight``)."""
        if self.radius is not None:
            z = limited(z, torch.min(torch.max(z, x - self.radius), x + self.radius), clip)
        if self.bounds is not None:
            z = limited(z, z.clamp(*self.bounds), clip)
        return z
