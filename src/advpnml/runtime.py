"""Where and how a job runs: device, torchrun context, memory layout, log and progress bars, as one object.

Every entry point (``evaluate``, ``train``, the sweeps, the adaptive-training experiment, the command
line) takes a :class:`Runtime` instead of five loose parameters, and :func:`start_runtime` is the one
place a command joins (and leaves) a torchrun job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from .accel.precision import check_precision
from .distributed import DistContext, init_distributed, shutdown_distributed


def silent(message: str) -> None:
    """A log that drops every message."""


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available; a clear error when CUDA is asked for and absent."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine; use --device cpu")
    return device


@dataclass(frozen=True)
class Runtime:
    """device: where tensors live. dist: this process's place in a torchrun job (one process by default).
    memory_format: the model layout (:mod:`advpnml.models.layout`: ``auto``, ``channels_last``,
    ``contiguous``). precision: ``fp32``, or ``bf16`` autocast of the model's forward
    (:mod:`advpnml.accel.precision`; base-model evaluation only, its agreement with fp32 measured by
    ``benchmarks/precision_agreement.py``).
    cuda_graphs: capture the PGD-training step as a CUDA graph (:mod:`advpnml.accel.graphs`; eager off CUDA).
    log: where messages go. progress: show progress bars.

    Only rank 0 logs and draws bars: :meth:`for_rank` returns the view a job uses.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dist: DistContext = field(default_factory=DistContext)
    memory_format: str = "auto"
    log: Callable[[str], None] = print
    progress: bool = True
    precision: str = "fp32"
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", resolve_device(self.device))
        check_precision(self.precision)

    @property
    def is_main(self) -> bool:
        """True on rank 0 (and in a single process)."""
        return self.dist.is_main

    @property
    def processes(self) -> str:
        """``", W processes"`` under torchrun (for a job's first line), else empty."""
        return f", {self.dist.world_size} processes" if self.dist.enabled else ""

    def for_rank(self) -> Runtime:
        """This runtime on rank 0; a silent one (no log, no bars) on the other ranks."""
        return self if self.dist.is_main else replace(self, log=silent, progress=False)

    def quiet(self) -> Runtime:
        """The same place, without messages or progress bars (for a job inside another)."""
        return replace(self, log=silent, progress=False)


#: A silent single-process CPU runtime: library calls inside tests and experiments.
QUIET = Runtime(log=silent, progress=False)


@contextmanager
def start_runtime(
    device: str | torch.device = "auto",
    memory_format: str = "auto",
    log: Callable[[str], None] = print,
    progress: bool = True,
    precision: str = "fp32",
    cuda_graphs: bool = False,
) -> Iterator[Runtime]:
    """The runtime of a command: joins the torchrun job if there is one (each rank on its own GPU) and
    leaves it on exit; silent on ranks other than 0."""
    ctx, resolved = init_distributed(resolve_device(device))
    try:
        yield Runtime(resolved, ctx, memory_format, log, progress, precision, cuda_graphs).for_rank()
    finally:
        shutdown_distributed()
