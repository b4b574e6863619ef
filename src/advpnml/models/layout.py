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

from ..modes import eval_mode

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

    Values are unchanged; only strides change, and parameters stay the same objects (an optimizer
    holding them is unaffected). Inputs need no conversion: a convolution with channels-last
    weights gives channels-last activations, and gradients w.r.t. an input keep its shape.
    """
    if memory_format not in ("channels_last", "contiguous"):
        raise ValueError(f"memory_format must be 'channels_last' or 'contiguous', got {memory_format!r}")
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.dim() == 4:
                param.data = param.data.to(memory_format=fmt)
        for name, buf in module.named_buffers(recurse=False):
            if buf is not None and buf.dim() == 4:
                module._buffers[name] = buf.to(memory_format=fmt)
    return model


def use_memory_format(
    model: nn.Module, device: str | torch.device, memory_format: str = "auto", example: torch.Tensor | None = None
) -> str:
    """Resolve ``memory_format`` for ``model`` on ``device``, apply it in place, and return the layout used.

    Under ``"auto"``, with an ``example`` input, channels_last is first tried on two inputs (forward
    and input gradient, in eval mode): a model whose forward cannot run on channels-last activations
    (e.g. ``x.view(n, -1)`` after a convolution) stays contiguous instead of failing later.
    """
    chosen = resolve_memory_format(model, device, memory_format)
    set_memory_format(model, chosen)
    if chosen == "channels_last" and memory_format == "auto" and example is not None:
        x = example[:2].detach().to(device).requires_grad_(True)
        try:
            with torch.enable_grad(), eval_mode(model):
                torch.autograd.grad(model(x).float().sum(), x)
        except RuntimeError:
            set_memory_format(model, "contiguous")
            chosen = "contiguous"
    return chosen
