"""The Adversarial pNML defense (Pessó, Bibas, Feder), eqs. 8-12 of the paper.

For every candidate label ``y_i`` the test input is refined by a weak *targeted* attack toward
``y_i`` (eq. 9), the model's probability of ``y_i`` on its own refined input is taken (eq. 11),
and the probabilities are normalized over labels (eq. 12). ``log sum_j p_j`` is the pNML regret
(eq. 8).

All hypotheses are refined in one batch of N*H inputs: one forward and one backward to get the
N*H refinement directions, one forward on the refined inputs. The refinement direction
``sign(grad)`` is piecewise constant, so the refined input is written ``x + delta.detach()``: its
gradient w.r.t. ``x`` is the identity. That is the paper's BPDA (Sec. 5.1), made explicit, so
any gradient attack run on this module is the paper's adaptive attack.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .validation import check_bounds, check_inputs, check_nonnegative, check_positive_int

#: log-probability given to labels outside the top-k hypotheses: exp() of it is exactly 0 in
#: float32 and float64, yet it stays finite so losses and gradients never see inf or NaN.
EXCLUDED_LOG_PROB = -1.0e4


@dataclass
class PnmlOutput:
    """Everything the defense computes for a batch.

    log_q:  (N, C) log of the Adversarial pNML assignment q (eq. 12); what ``forward`` returns.
    log_p:  (N, C) log p_i, the probability each hypothesis gives its own label (eq. 11);
            ``EXCLUDED_LOG_PROB`` for labels outside the top-k.
    regret: (N,) the pNML regret ``log sum_j p_j`` (eq. 8).
    labels: (N, H) the hypotheses that were refined (all C labels unless top_k is set).
    """

    log_q: torch.Tensor
    log_p: torch.Tensor
    regret: torch.Tensor
    labels: torch.Tensor

    @property
    def probs(self) -> torch.Tensor:
        """p_i (eq. 11): exactly zero for labels that were not refined."""
        return self.log_p.exp()


class AdversarialPnml(nn.Module):
    """Wrap a classifier (inputs in ``bounds``, logits out) with the Adversarial pNML defense.

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to logits (N, C).
        refine_eps: the refinement strength lambda of eq. 9 (total l_inf budget of the refinement).
        refine_steps: number of targeted sign-gradient steps (Fig. 4: 1x0.03, 2x0.015, 4x0.01).
        step_size: size of each step; defaults to ``refine_eps / refine_steps``. Iterates are
            projected back onto the ``refine_eps`` ball around the input.
        top_k: refine only the k most probable labels of the unrefined prediction (Fig. 7);
            the others get probability zero. ``None`` refines all C labels.
        bounds: input domain ``(low, high)`` the refined inputs are clamped to; ``None`` for
            unbounded inputs such as the 2-D toy data.
        check_inputs: validate every batch (finite, inside ``bounds``); costs one device sync.

    ``forward`` returns log q, shape (N, C), so the defended model is itself a classifier that
    every attack in :mod:`advpnml.attacks` runs against unchanged.
    """

    def __init__(
        self,
        model: nn.Module,
        refine_eps: float,
        refine_steps: int = 1,
        step_size: float | None = None,
        top_k: int | None = None,
        bounds: tuple[float, float] | None = (0.0, 1.0),
        check_inputs: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
        self.model = model
        self.refine_eps = check_nonnegative("refine_eps (lambda)", refine_eps)
        self.refine_steps = check_positive_int("refine_steps", refine_steps)
        default_step = self.refine_eps / self.refine_steps
        self.step_size = default_step if step_size is None else check_nonnegative("step_size", step_size)
        if top_k is not None:
            check_positive_int("top_k", top_k)
        self.top_k = top_k
        self.bounds = check_bounds(bounds)
        self.check_inputs = check_inputs
        self.num_classes: int | None = None

    def extra_repr(self) -> str:
        return (
            f"refine_eps={self.refine_eps:g}, refine_steps={self.refine_steps}, step_size={self.step_size:g}, "
            f"top_k={self.top_k}, bounds={self.bounds}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return log q(y|x) of eq. 12, shape (N, C)."""
        return self.hypotheses(x).log_q

    def regret(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pNML regret ``log sum_j p_j`` of eq. 8, shape (N,)."""
        return self.hypotheses(x).regret

    def hypotheses(self, x: torch.Tensor) -> PnmlOutput:
        """Refine ``x`` toward every hypothesis and return log q, log p_i, the regret and the labels."""
        if self.check_inputs:
            check_inputs(x, self.bounds)
        labels = self._hypothesis_labels(x)
        n, h = labels.shape
        refined = self.refine(x, labels)
        logits = self.model(refined.reshape(n * h, *x.shape[1:]))
        num_classes = logits.shape[-1]
        log_p_own = F.log_softmax(logits.view(n, h, num_classes), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        if h == num_classes and self.top_k is None:
            log_p = log_p_own
        else:
            log_p = torch.full((n, num_classes), EXCLUDED_LOG_PROB, dtype=log_p_own.dtype, device=x.device)
            log_p = log_p.scatter(1, labels, log_p_own)
        regret = torch.logsumexp(log_p_own, dim=1)
        return PnmlOutput(log_q=log_p - regret.unsqueeze(1), log_p=log_p, regret=regret, labels=labels)

    def refine(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Eq. 9 for every (sample, hypothesis) pair: returns refined inputs of shape (N, H, ...).

        ``labels`` is (N, H). The returned tensor is ``x + delta`` with ``delta`` detached, so its
        gradient w.r.t. ``x`` is the identity (BPDA) while its value is the refined input.
        """
        n, h = labels.shape
        flat_shape = (n * h, *x.shape[1:])
        start = x.detach().unsqueeze(1).expand(n, h, *x.shape[1:]).reshape(flat_shape)
        targets = labels.reshape(-1)
        current = start
        with torch.enable_grad():
            for _ in range(self.refine_steps):
                current = current.detach().requires_grad_(True)
                # Summed per-sample losses: each input's gradient is its own (the model is per-sample in eval mode).
                loss = F.cross_entropy(self.model(current), targets, reduction="sum")
                (grad,) = torch.autograd.grad(loss, current)
                # Targeted step: move *down* the loss of the hypothesised label (eq. 2 / eq. 9).
                current = current.detach() - self.step_size * grad.sign()
                if self.refine_steps > 1:
                    current = torch.min(torch.max(current, start - self.refine_eps), start + self.refine_eps)
                if self.bounds is not None:
                    current = current.clamp(*self.bounds)
        delta = (current - start).detach().view(n, h, *x.shape[1:])
        return x.unsqueeze(1) + delta

    def _hypothesis_labels(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H) labels to refine toward: all classes, or the top-k of the unrefined prediction."""
        n = x.shape[0]
        if self.top_k is None:
            if self.num_classes is None:
                # Learn C once from a single input, so the full defense costs no extra forward of the batch.
                self.num_classes = self._logits_without_grad(x[:1]).shape[1]
            return torch.arange(self.num_classes, device=x.device).expand(n, self.num_classes)
        logits = self._logits_without_grad(x)
        self.num_classes = logits.shape[1]
        if self.top_k > self.num_classes:
            raise ValueError(f"top_k must be in [1, {self.num_classes}] (the number of classes), got {self.top_k}")
        return logits.topk(self.top_k, dim=1).indices.sort(dim=1).values

    def _logits_without_grad(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.model(x)
        if logits.dim() != 2:
            raise ValueError(f"model must return logits of shape (N, C), got shape {tuple(logits.shape)}")
        return logits
