"""Test-time transformation ensembling (Pérez et al. 2021, "Enhancing Adversarial Robustness via Test-time
Transformation Ensembling", ICCV workshops, arXiv:2107.14110).

The prediction averages the model over a few label-preserving views of the input: the image itself, its
horizontal flip, and crops of the image padded by ``shift`` pixels taken at the four corners (shifts by
``(+-shift, +-shift)``), each also flipped (Sec. 3: "flip" and "4 crops + flip"). Every view is a fixed linear map of
the input, so the defense is differentiable end to end: no BPDA, every gradient attack goes through it as it is.
It is the control among the defenses: what the suite says of a defense that needs no backward of its own.

We average the views' logits. Defaults: flip and 4 corner crops of a 2-pixel padding (CIFAR-10); the MNIST presets
turn the flip off (a mirrored digit is another digit, or none).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class TransformEnsemble(nn.Module):
    """The mean of ``model``'s logits over the views of the module docstring; inputs (N, C, H, W)."""

    name = "tte"

    def __init__(self, model: nn.Module, flip: bool = True, shift: int = 2) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
        if not isinstance(flip, bool):
            raise ValueError(f"tte flip must be true or false, got {flip!r}")
        if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
            raise ValueError(f"tte shift must be a whole number of pixels >= 0, got {shift!r}")
        self.model, self.flip, self.shift = model, flip, shift

    def settings(self) -> dict[str, object]:
        """The parameters that decide what it computes."""
        return {"flip": self.flip, "shift": self.shift}

    def extra_repr(self) -> str:
        """Flip and shift, for ``print(defense)``."""
        return f"flip={self.flip}, shift={self.shift}"

    def views(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input's views, each (N, C, H, W): itself, its corner crops, and (``flip``) each of them mirrored."""
        if x.dim() != 4:
            raise ValueError(f"tte needs image batches (N, C, H, W), got shape {tuple(x.shape)}")
        views = [x]
        s = self.shift
        if s > 0:
            height, width = x.shape[-2:]
            padded = F.pad(x, (s, s, s, s))
            views += [padded[..., top : top + height, left : left + width] for top in (0, 2 * s) for left in (0, 2 * s)]
        if self.flip:
            views += [v.flip(-1) for v in views]
        return views

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The views' mean logits, (N, C)."""
        views = self.views(x)
        logits = self.model(torch.cat(views))
        return logits.view(len(views), len(x), -1).mean(0)
