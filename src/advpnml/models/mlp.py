"""The 4-layer fully connected classifier of the paper's 2-D toy example (Sec. 4.2, Fig. 1)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model


class ToyMLP(nn.Module):
    """Four linear layers with ReLU between them; inputs are unbounded 2-D points (no normalization)."""

    def __init__(self, in_features: int = 2, hidden: int = 64, num_classes: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the 2-D points ``x``."""
        return self.net(x)


@register_model("toy_mlp", description="4-layer MLP of the 2-D toy example", in_features=2, hidden=64, num_classes=2)
def toy_mlp(**kwargs) -> ToyMLP:
    """The toy example's 4-layer MLP (Sec. 4.2)."""
    return ToyMLP(**kwargs)
