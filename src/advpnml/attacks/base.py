"""What every attack shares: the call convention, eval mode, input checks and a private RNG.

``attack(model, x, y) -> x_adv``: the model is passed at call time, so one attack object serves
the base model and the defended model alike. Inputs and outputs lie in ``bounds`` ((0, 1) for
images) and ``x_adv`` stays within ``eps`` of ``x`` in l_inf.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from ..modes import eval_mode, frozen_parameters
from ..validation import check_bounds, check_inputs, check_labels, check_nonnegative


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Project onto the l_inf ball of radius ``eps`` around ``x``, then into ``bounds``."""
    x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
    return x_adv if bounds is None else x_adv.clamp(*bounds)


class Attack:
    """Base class. Subclasses implement :meth:`perturb` on detached inputs in eval mode.

    Args:
        eps: l_inf radius of the threat model.
        bounds: input domain; ``None`` for unbounded inputs (the 2-D toy data).
        seed: seed of the attack's own ``torch.Generator``; the caller's global RNG is never touched.
        targeted: if True, ``y`` holds target labels the attack tries to reach.
    """

    name = "attack"
    #: Called with a few words on how far the attack is ("step 40/100", "query 1200/5000"); the evaluation's progress
    #: bar shows them, so a long attack is never a bar at 0/N. None: nothing is reported.
    progress: Callable[[str], None] | None = None

    def __init__(
        self, eps: float, bounds: tuple[float, float] | None = (0.0, 1.0), seed: int = 0, targeted: bool = False
    ) -> None:
        self.eps = check_nonnegative("eps", eps)
        self.bounds = check_bounds(bounds)
        if self.bounds is not None and self.eps > self.bounds[1] - self.bounds[0]:
            width = self.bounds[1] - self.bounds[0]
            raise ValueError(
                f"eps {eps!r} is wider than the input range [{self.bounds[0]:g}, {self.bounds[1]:g}]: at eps {width:g} "
                f"any input already reaches any other; use at most {width:g}"
            )
        self.seed = int(seed)
        self.targeted = bool(targeted)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial examples for ``x`` with labels ``y``: checked inputs, eval mode, frozen parameters, detached output."""
        check_inputs(x, self.bounds)
        check_labels(y, x.shape[0])
        with eval_mode(model), frozen_parameters(model):
            x_adv = self.perturb(model, x.detach(), y.detach().to(x.device))
        return x_adv.detach()

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The attack itself, on detached inputs in eval mode (each subclass implements it)."""
        raise NotImplementedError

    def report(self, done: int, total: int, unit: str, where: str = "") -> None:
        """Tell :attr:`progress` (if set) that ``done`` of ``total`` ``unit`` are done (``where``: e.g. the target)."""
        if self.progress is not None:
            self.progress(f"{where}{unit} {done}/{total}")

    def generator(self, device: torch.device) -> torch.Generator:
        """A fresh generator seeded with ``self.seed``: the same call gives the same result."""
        return torch.Generator(device=device).manual_seed(self.seed)

    def fooled(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample success: misclassified (untargeted) or classified as the target (targeted)."""
        pred = logits.argmax(1)
        return pred == y if self.targeted else pred != y

    def settings(self) -> dict:
        """The hyper-parameters, for reports (every public attribute that is a plain value)."""
        return {
            k: v
            for k, v in vars(self).items()
            if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None), tuple))
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.settings().items()) + ")"
