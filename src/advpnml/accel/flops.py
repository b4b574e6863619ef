"""Floating-point operations of a call, counted, and what they mean on the device that ran it (issue 18).

:func:`count_flops` counts with the FLOP formulas of ``torch.utils.flop_counter`` (convolutions,
matrix products, attention: the operators that do the arithmetic; element-wise work is not counted),
through a dispatch mode of its own: ``FlopCounterMode`` itself fails around the defense, whose forward
calls ``autograd.grad`` inside (its module tracker's hooks meet a leaf of the inner backward).
:func:`peak_tflops` gives a device's dense peak for a dtype, so a benchmark can say how far from the
hardware a measured rate is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


class _FlopCount(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations (a multiply-add is 2) of one call of ``fn``, forward and backward.

    Counted on the shapes the call dispatches, so it is the same on any device; run it on the CPU with
    a small batch and scale, or on the device itself.
    """
    with _FlopCount() as counter:
        fn()
    return counter.flops


#: Dense peak TFLOP/s by device-name fragment and dtype (vendor data sheets, SXM parts, no sparsity).
#: fp32 convolutions on these GPUs run as TF32 by default (``torch.backends.cudnn.allow_tf32``), so a
#: fp32 case is set against the TF32 tensor-core peak as well as the plain fp32 one.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
}


def peak_tflops(device_name: str, dtype: str) -> float | None:
    """The dense peak of ``device_name`` (e.g. ``"NVIDIA H200"``) for ``dtype`` (``fp32``, ``tf32``, ``bf16``);
    None for a device not in :data:`PEAK_TFLOPS` (a CPU: its peak depends on cores, clocks and vector units)."""
    for fragment, peaks in PEAK_TFLOPS.items():
        if fragment in device_name:
            return peaks.get(dtype)
    return None


def rate(flops: int, seconds: float, device_name: str, dtype: str) -> dict[str, float | None]:
    """Achieved TFLOP/s and the fraction of the dtype's dense peak (None where the peak is unknown)."""
    achieved = flops / seconds / 1e12 if seconds > 0 else float("nan")
    peak = peak_tflops(device_name, dtype)
    return {"tflops": achieved, "peak_tflops": peak, "peak_fraction": None if peak is None else achieved / peak}
