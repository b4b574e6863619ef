"""Transfer attack: adversarial examples computed on a source model (the undefended base), then
evaluated on whatever model the caller passes (the defense). The paper's FGSM and PGD columns
for the defended model are attacks of this kind."""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import Attack


class Transfer(Attack):
    """Run ``attack`` against ``source`` regardless of the model given at call time."""

    name = "transfer"

    def __init__(self, attack: Attack, source: nn.Module) -> None:
        super().__init__(attack.eps, attack.bounds, attack.seed, attack.targeted)
        self.attack = attack
        self.source = source

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The source attack's examples, computed on the source model (``model`` is only judged on them)."""
        return self.attack(self.source, x, y)

    def settings(self) -> dict:
        """The source attack, as the report prints it."""
        return {"source_attack": repr(self.attack)}
