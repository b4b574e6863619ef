"""Expectation over Transformation (Athalye et al. 2018) for a defense that draws random numbers.

A gradient attack on a random defense follows the gradient of one draw, which the next draw may not share. The
attack instead goes through the mean of the defense's log-probabilities over ``draws`` draws: for the
cross-entropy that is exactly the mean of the draws' losses, so its gradient is the mean of their gradients (what
Croce et al.'s APGD with ``eot_iter`` computes); for margin losses it is the loss of the mean prediction.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..validation import check_positive_int


class ExpectationOverTransformation(nn.Module):
    """``defense``'s log-softmax averaged over ``draws`` calls (each a fresh draw of its randomness)."""

    def __init__(self, defense: nn.Module, draws: int) -> None:
        super().__init__()
        self.defense = defense
        self.draws = check_positive_int("eot_draws", draws)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean log-probabilities over the draws, (N, C)."""
        return torch.stack([self.defense(x).log_softmax(1) for _ in range(self.draws)]).mean(0)
