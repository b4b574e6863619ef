"""The anti-adversary layer (Alfarra et al., AAAI 2022, "Combating Adversaries with Anti-Adversaries").

An attack lowers the model's confidence in the true class; the anti-adversary moves the input the opposite way, up
the confidence in the model's own prediction ``y_hat = argmax f(x)``: ``gamma <- gamma - alpha * sign(grad_gamma
CE(f(x + gamma), y_hat))`` for ``K`` steps from ``gamma = 0`` (Algorithm 1), then classifies ``f(x + gamma)``. There
is no ball and no clip: the authors' wrapper (``Anti_Adv.py`` of their repository) adds ``gamma`` unbounded.

Defaults: K = 2, alpha = 0.15, the values the authors run on CIFAR-10 with AWP's WideResNet (their README's
``--k 2 --alpha 0.15``; that model takes [0, 1] pixels, so alpha is in pixel units, as here). The presets state the
values per dataset.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .refinement import GradientRefinement


class AntiAdversary(GradientRefinement):
    """The anti-adversary layer around ``model`` (inputs in [0, 1], logits out); see the module docstring."""

    name = "anti-adversary"

    def __init__(
        self,
        model: nn.Module,
        steps: int = 2,
        step_size: float = 0.15,
        radius: float | None = None,
        bounds: tuple[float, float] | None = None,
        **options,
    ) -> None:
        super().__init__(model, steps, step_size, radius, bounds, random_start=False, **options)
        self._own_labels: torch.Tensor | None = None

    def settings(self) -> dict[str, object]:
        """Its parameters (it draws nothing: no EOT, one run scores it)."""
        return {"steps": self.steps, "step_size": self.step_size, "radius": self.radius}

    def prepare(self, x: torch.Tensor) -> None:
        """The model's own prediction on the unrefined input: the label the steps raise the confidence in."""
        with torch.no_grad():
            self._own_labels = self.model(x.detach()).argmax(1)

    def objective(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``-CE(f(z), y_hat)``, per sample (ascending it descends the cross-entropy of the own prediction)."""
        assert self._own_labels is not None
        return -F.cross_entropy(logits, self._own_labels, reduction="none")
