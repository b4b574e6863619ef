"""Memory layout of a convolutional model: ``channels_last`` gives the same values, faster on CPU.

With 4-D weights and activations stored channels-last, oneDNN's CPU convolutions run without the
layout reorders the default (NCHW) layout costs on every call. Measured on this project's 2-core
CPU (``advpnml bench``): the Madry CNN's forward of 320 inputs 1.4-1.6x faster, a PreActResNet-18's
and a WRN-28-10's about 1.1x; outputs equal to float rounding (<= 1e-6). On a GPU it depends on
cuDNN and the dtype, so ``"auto"`` keeps the default layout there.
"""
from __future__ import annotations

import torch
import torch.nn as nn

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def has_conv2d(model: nn.Module) -> bool:
    """True when ``model`` holds a 2-D convolution (the layers a layout change speeds up)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def resolve_memory_format(model: nn.Module, device: str | torch.device, memory_format: str = "auto") -> str:
    """The layout to run ``model`` in: ``"auto"`` is channels_last for convolutional models on CPU."""
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}; got {memory_format!r}")
    if memory_format != "auto":
        return memory_format
    return "channels_last" if torch.device(device).type == "cpu" and has_conv2d(model) else "contiguous"


def set_memory_format(model: nn.Module, memory_format: str) -> nn.Module:
    """Store ``model``'s 4-D parameters and buffers in ``memory_format``, in place (like ``model.to``).

    Values are unchanged; only strides change. Inputs need no conversion: a convolution with
    channels-last weights gives channels-last activations, and gradients w.r.t. an input keep its shape.
    """
    if memory_format not in ("channels_last", "contiguous"):
        raise ValueError(f"memory_format must be 'channels_last' or 'contiguous', got {memory_format!r}")
    return model.to(memory_format=torch.channels_last if memory_format == "channels_last" else torch.contiguous_format)
