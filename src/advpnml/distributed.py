"""Running under ``torchrun``: one process per device, work split by rank, rank 0 writes the results.

``torchrun --nproc-per-node N -m advpnml train|evaluate ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`init_distributed` reads them, joins the process group (NCCL on GPUs, gloo on CPU) and
returns a :class:`DistContext`. Without torchrun it returns the single-process context, so
library code calls the same methods either way and never branches on "am I distributed".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# Ranks wait for each other only at the end of an evaluation or an epoch; shards of a long attack
# (HSJA at thousands of queries) can finish hours apart, far beyond torch's 30-minute default.
DEFAULT_TIMEOUT = timedelta(hours=float(os.environ.get("ADVPNML_DIST_TIMEOUT_HOURS", "24")))


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True inside a torchrun job of more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (and in a single process): the rank that writes files and logs."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's items, round-robin: rank r takes items r, r + W, r + 2W, ... (deterministic, balanced)."""
        return list(items[self.rank :: self.world_size])

    def barrier(self) -> None:
        """Wait for every rank (a no-op in a single process)."""
        if self.enabled:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over ranks (a float64 all-reduce; identity in one process)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def launched_by_torchrun() -> bool:
    """True when torchrun started this process (its environment variables are set)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the torchrun job if there is one; returns the context and this rank's device.

    On CUDA each rank takes ``cuda:LOCAL_RANK``; on CPU all ranks share the machine (gloo).
    """
    if not launched_by_torchrun():
        return DistContext(), device
    ctx = DistContext(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=DEFAULT_TIMEOUT)
    return ctx, device


def shutdown_distributed() -> None:
    """Leave the torchrun job, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
