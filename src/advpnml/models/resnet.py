"""ResNet-50 for ImageNet through torchvision (optional extra: ``pip install advpnml[imagenet]``).

The paper keeps only the first 100 logits of an ImageNet model and evaluates on those 100
classes (Sec. 5.2); ``keep_logits=100`` does that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .normalization import IMAGENET_MEAN, IMAGENET_STD, Normalize
from .registry import register_model


class ResNet50(nn.Module):
    """torchvision's ResNet-50 behind a normalization layer; parameters live under ``net.``."""

    def __init__(
        self,
        num_classes: int = 1000,
        keep_logits: int | None = None,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
    ) -> None:
        super().__init__()
        try:
            from torchvision.models import resnet50
        except ImportError as err:
            raise ImportError(
                "architecture 'resnet50' needs torchvision: pip install 'advpnml[imagenet]' "
                f"(torchvision must match your torch build) [{err}]"
            ) from None
        if keep_logits is not None and not 1 <= keep_logits <= num_classes:
            raise ValueError(f"keep_logits must be in [1, {num_classes}], got {keep_logits}")
        self.normalize = Normalize(mean, std)
        self.net = resnet50(weights=None, num_classes=num_classes)
        self.keep_logits = keep_logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (inputs in [0, 1], normalized inside), the first ``keep_logits`` when set."""
        logits = self.net(self.normalize(x))
        return logits if self.keep_logits is None else logits[:, : self.keep_logits]


@register_model(
    "resnet50",
    description="torchvision ResNet-50 for ImageNet (optional extra)",
    num_classes=1000,
    keep_logits=None,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)
def resnet50(**kwargs) -> ResNet50:
    """torchvision's ResNet-50 for ImageNet (needs torchvision)."""
    return ResNet50(**kwargs)
