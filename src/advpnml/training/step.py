"""One training update, and the PGD-training step a CUDA graph captures whole (issue 18).

:func:`update_step` is the update every training method ends with. :class:`GraphedPgdStep` is a
PGD-training step (PGD-40 from a start drawn outside, the update) run through
:class:`~advpnml.accel.graphs.GraphedStep`: on a GPU one graph launch instead of thousands of kernel
launches; elsewhere, or when capture fails, the same function eagerly. Either way the values are those
of the eager step of :func:`advpnml.training.trainer.train` (tested on CPU, weight for weight).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..accel.graphs import GraphedStep
from ..attacks import PGD
from ..defense import AdversarialPnml
from ..modes import eval_mode, frozen_parameters


def update_step(
    model: nn.Module,
    trained: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    x: torch.Tensor,
    y: torch.Tensor,
    x_train: torch.Tensor,
    share: float | None = None,
    use_amp: bool = False,
) -> torch.Tensor:
    """Loss on ``x_train``, backward, optimizer step; returns ``(loss * n, adversarially correct, clean correct)``
    as one float64 tensor on the device, without a host synchronization.

    ``trained`` is ``model`` or its DistributedDataParallel wrapper; ``share`` weights this rank's loss so the
    ranks' averaged gradient is the batch mean. The model is left in eval mode (the clean count is taken there).
    """
    model.train()
    with torch.autocast(device_type="cuda", enabled=use_amp):
        logits = trained(x_train)
        loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss if share is None else loss * share).backward()
    scaler.step(optimizer)
    scaler.update()
    with torch.no_grad():
        adv = (logits.argmax(1) == y).sum()
        model.eval()
        clean = (model(x).argmax(1) == y).sum() if x_train is not x else adv
        return torch.stack([loss.detach().double() * len(y), adv.double(), clean.double()])


class GraphedPgdStep:
    """A PGD-training step, captured as a CUDA graph on a GPU: ``step(x, y, eps, adaptive, seed)``.

    The attack's random start is drawn eagerly from the step's own seed (as :class:`~advpnml.attacks.PGD`
    draws it) and passed in; the learning rate, eps and whether the attack runs through the defense
    (the adaptive epochs) are baked into a graph, so a change captures a new one. Only SGD is captured
    (its update reads no step counter); the caller checks that.
    """

    def __init__(
        self,
        model: nn.Module,
        trained: nn.Module,
        optimizer: torch.optim.Optimizer,
        steps: int,
        step_size: float,
        refine_eps: float,
        bounds: tuple[float, float] | None,
        log: Callable[[str], None],
    ) -> None:
        self.model, self.trained, self.optimizer = model, trained, optimizer
        self.steps, self.step_size, self.refine_eps, self.bounds = steps, step_size, refine_eps, bounds
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)
        self.graph = GraphedStep(self._step, log=log)
        self._attack = PGD(0.0, steps, step_size, bounds=bounds)  # the current step's attack: rebuilt per call (eps, seed)
        self._target: nn.Module = model
        self._defended: AdversarialPnml | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, eps: float, adaptive: bool, seed: int) -> torch.Tensor:
        """One PGD-training step on a batch (attack, loss, backward, SGD update), replayed from its CUDA graph when captured."""
        self._attack = PGD(eps, self.steps, self.step_size, bounds=self.bounds, seed=seed)
        self._target = self._defense(x) if adaptive else self.model
        lr = tuple(group["lr"] for group in self.optimizer.param_groups)
        return self.graph(x, y, self._attack.start_point(x), key=(lr, eps, adaptive))

    def _defense(self, x: torch.Tensor) -> AdversarialPnml:
        if self._defended is None:
            with torch.no_grad():
                classes = self.model(x[:1]).shape[1]
            # A fixed chunk size: the memory-budget default asks the driver for free memory, which a graph cannot hold.
            self._defended = AdversarialPnml(
                self.model, self.refine_eps, bounds=self.bounds, check_inputs=False, max_batch=x.shape[0] * classes
            )
        return self._defended

    def _step(self, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        with eval_mode(self._target), frozen_parameters(self._target):
            x_train = self._attack.from_start(self._target, x, y, start).detach()
        return update_step(self.model, self.trained, self.optimizer, self.scaler, x, y, x_train)
