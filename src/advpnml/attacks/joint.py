"""The joint-hypotheses attack: an adaptive attack aimed at the mechanism of Adversarial pNML.

The defense predicts the label whose own refined input the model is most sure of. Margin or
cross-entropy on log q see those hypotheses only through their log-softmax probabilities, which
saturate near 0 and 1. This attack works on the refined inputs' *logits*: with
``m_i = z^(i)_i - max_{k != i} z^(i)_k`` the logit margin of hypothesis i on its own refined
input x_i, it maximizes ``max_{j != y} m_j - m_y``, pushing the true hypothesis's refinement off
its label and the best wrong one's onto its label, through all C refinements at once (identity
backward through each refinement, the paper's BPDA). Success is judged by the defense's prediction.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..defense import AdversarialPnml
from .losses import margin
from .pgd import PGD


class JointHypotheses(PGD):
    """PGD on the hypotheses' logit margins; ``model`` must be an :class:`~advpnml.AdversarialPnml`."""

    name = "joint"

    def __init__(
        self,
        eps: float,
        steps: int = 40,
        step_size: float = 0.01,
        restarts: int = 1,
        random_start: bool = True,
        early_stop: bool | str = "steps",
        bounds=(0.0, 1.0),
        seed: int = 0,
    ) -> None:
        super().__init__(
            eps, steps, step_size, restarts, random_start, loss="margin", early_stop=early_stop, bounds=bounds, seed=seed
        )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Margin PGD on the refined hypotheses' logits of the defense ``model`` (an :class:`~advpnml.defense.AdversarialPnml`)."""
        if not isinstance(model, AdversarialPnml):
            raise ValueError(
                f"the joint-hypotheses attack needs an AdversarialPnml model, got {type(model).__name__}; "
                'run it with defense = "direct" only'
            )
        return super().perturb(model, x, y)

    def _scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log q for judging success, the joint objective to maximize) from one pass through the defense."""
        model = cast(AdversarialPnml, model)  # perturb checked it
        n = x.shape[0]
        num_classes = model.num_classes
        if num_classes is None:
            with torch.no_grad():
                num_classes = model.num_classes = model.model(x[:1]).shape[1]
        labels = torch.arange(num_classes, device=x.device).expand(n, num_classes)
        refined = model.refine(x, labels)  # (N, C, ...), identity backward
        logits = model.model(refined.reshape(n * num_classes, *x.shape[1:])).view(n, num_classes, num_classes)
        own = logits.diagonal(dim1=1, dim2=2)  # z^(i)_i
        others = logits.masked_fill(torch.eye(num_classes, dtype=torch.bool, device=x.device), float("-inf")).max(2).values
        margins = own - others  # m_i, (N, C)
        log_p = F.log_softmax(logits, dim=2).diagonal(dim1=1, dim2=2)
        log_q = log_p - log_p.logsumexp(1, keepdim=True)
        return log_q, margin(margins, y)
