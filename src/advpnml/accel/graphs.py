"""A fixed-shape step captured once as a CUDA graph and replayed, with an eager fallback everywhere else.

A step of the paper's MNIST training (PGD-40 on a batch of 50, then the update) launches thousands of
small kernels; on a GPU their launch cost, not their arithmetic, sets the pace (73-85 s per epoch on an
H200 for about 0.2 PFLOP of work, issue 18). Captured as one CUDA graph the whole step is one launch.

What a captured step may do (PyTorch's "whole-network capture" rules): tensors of fixed shapes on one
CUDA device, no host synchronization (``.item()``, ``bool(tensor)``, data-dependent shapes), no device
RNG drawn from a private generator (draw it outside and pass it in), and Python decisions that do not
change between calls (they are taken once, at capture). Values the step bakes in (a learning rate, an
eps) go in ``key``: a new key captures again.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..modes import eval_mode, frozen_parameters


def _quiet(message: str) -> None:
    """A log that drops every message (the default when the caller gives none)."""


def _capturable(tensor: torch.Tensor) -> bool:
    """Whether a CUDA graph can hold work on ``tensor``'s device."""
    return tensor.device.type == "cuda"


def _signature(inputs: tuple[torch.Tensor, ...]) -> tuple:
    return tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)


class GraphedStep:
    """``step(*inputs)`` run eagerly for its first ``warmup`` calls, then captured and replayed.

    Args:
        fn: the step; takes tensors, returns a tensor or a tuple of tensors.
        enabled: capture at all. On a non-CUDA device, or when capture fails, every call runs ``fn``
            eagerly (the same values) and :attr:`reason` says why, logged once.
        warmup: eager calls on a side stream before the first capture (cuBLAS/cuDNN set-up, lazily
            created state such as optimizer buffers), as PyTorch's capture rules require; one before
            each later capture under a new ``key``.
        max_captures: a ``key`` that keeps changing (a per-step learning-rate schedule) would recapture
            every call, slower than eager: past this many captures the step stays eager.
        log: where the fallback's one-line reason goes.

    Calls whose inputs differ in shape from the first call's (a dataset's smaller last batch) run eagerly.
    A call returns the step's outputs; after a replay they are the graph's static buffers, valid until
    the next call (clone what must outlive it).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        enabled: bool = True,
        warmup: int = 3,
        max_captures: int = 8,
        log: Callable[[str], None] = _quiet,
    ) -> None:
        self.fn = fn
        self.enabled = enabled
        self.warmup = warmup
        self.max_captures = max_captures
        self.log = log
        self.reason: str | None = None if enabled else "capture disabled"
        self.calls = 0
        self.captures = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._key: Hashable = None
        self._static_in: tuple[torch.Tensor, ...] = ()
        self._static_out: Any = None
        self._shapes: tuple | None = None
        self._warm_key: Hashable = object()
        self._warm_calls = 0

    @property
    def captured(self) -> bool:
        """True while calls replay a graph."""
        return self._graph is not None

    def __call__(self, *inputs: torch.Tensor, key: Hashable = None) -> Any:
        """Run the step: eagerly, captured once per key, or replayed from its graph (same values either way)."""
        self.calls += 1
        if self.reason is None and (not inputs or not _capturable(inputs[0])):
            self._fall_back(f"CUDA graphs need CUDA tensors, got {inputs[0].device if inputs else 'no inputs'}; running eagerly")
        if self.reason is not None:
            return self.fn(*inputs)
        if self._shapes is None:
            self._shapes = _signature(inputs)
        if _signature(inputs) != self._shapes:
            return self.fn(*inputs)  # an odd batch (a dataset's last): eager, the graph stays
        if self._graph is not None and key == self._key:
            for static, value in zip(self._static_in, inputs):
                static.copy_(value)
            self._graph.replay()
            return self._static_out
        if key != self._warm_key:  # a new key: its own eager warm-up (new shapes inside, e.g. through the defense)
            self._warm_key, self._warm_calls = key, 0
        if self._warm_calls < (self.warmup if self.captures == 0 else 1):
            self._warm_calls += 1
            return self._on_side_stream(inputs)
        if self.captures >= self.max_captures:
            self._fall_back(f"captured {self.captures} times (its key {key!r} keeps changing); running eagerly")
            return self.fn(*inputs)
        try:
            graph = self._capture(inputs, key)
        except Exception as err:  # noqa: BLE001 - any failure to capture means: run eagerly, as documented
            self._fall_back(
                f"CUDA graph capture failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); running eagerly"
            )
            torch.cuda.synchronize()
            return self.fn(*inputs)
        graph.replay()
        return self._static_out

    def _on_side_stream(self, inputs: tuple[torch.Tensor, ...]) -> Any:
        side = torch.cuda.Stream(inputs[0].device)
        side.wait_stream(torch.cuda.current_stream(inputs[0].device))
        with torch.cuda.stream(side):
            outputs = self.fn(*inputs)
        torch.cuda.current_stream(inputs[0].device).wait_stream(side)
        return outputs

    def _capture(self, inputs: tuple[torch.Tensor, ...], key: Hashable) -> torch.cuda.CUDAGraph:
        self._graph = self._static_out = None
        static_in = tuple(value.clone() for value in inputs)
        torch.cuda.synchronize(inputs[0].device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(*static_in)
        self._graph, self._key, self._static_in, self._static_out = graph, key, static_in, static_out
        self.captures += 1
        return graph

    def _fall_back(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self.log(reason)
        self._graph = self._static_out = None


class GraphedAttack:
    """``attack(model, x, y)`` for a one-restart :class:`~advpnml.attacks.PGD` or untargeted
    :class:`~advpnml.attacks.APGD`, its whole run captured as one CUDA graph per model and batch shape.

    The random start is drawn eagerly (the attack's own seeded generator) and passed in, so the result
    is the attack's own; off CUDA, or where capture fails, it runs eagerly. Inputs are not checked
    (the eager attack checks them; here that would cost a host synchronization per call).
    """

    def __init__(self, attack: Any, warmup: int = 2, log: Callable[[str], None] = _quiet) -> None:
        if not hasattr(attack, "from_start"):
            raise ValueError(f"GraphedAttack needs an attack with from_start (PGD, APGD), got {type(attack).__name__}")
        self.attack = attack
        self.graph = GraphedStep(self._run, warmup=warmup, log=log)
        self._model: torch.nn.Module | None = None

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Run the attack on ``model``: its captured graph replayed for this shape and model, else eagerly."""
        self._model = model
        start = self.attack.start_point(x)
        with eval_mode(model), frozen_parameters(model):  # at capture and in eager runs; a replay keeps what it recorded
            # The model itself is the key (compared by identity, and held by the graph, so no other model can take its id).
            return self.graph(x, y, start, key=model).clone()

    def _run(self, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        return self.attack.from_start(self._model, x, y, start)


#: operators that copy a value from the device to the host (``.item()``, ``bool(t)``) or size an output by data;
#: indexing with a boolean mask is caught too: each waits for the device, which a captured graph cannot do
SYNCING_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "repeat_interleave")
_INDEXING_OPS = ("index", "index_put", "index_put_", "_index_put_impl_")


class _SyncRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._overloadpacket.__name__
        if name in SYNCING_OPS:
            self.found.append(name)
        elif name in _INDEXING_OPS and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ()):
            self.found.append(f"{name} with a boolean mask")  # sized by the mask's count: a nonzero on the device
        return func(*args, **(kwargs or {}))


def host_syncs(fn: Callable[[], Any]) -> list[str]:
    """The operators of one call of ``fn`` that would make a CUDA device wait for the host (see :data:`SYNCING_OPS`),
    in order: empty for a function a CUDA graph can capture. Runs on any device, so the CPU tests check what a
    GPU capture needs."""
    with _SyncRecorder() as recorder:
        fn()
    return recorder.found
