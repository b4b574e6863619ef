"""The Adversarial pNML defense (Pessó, Bibas, Feder), eqs. 8-12 of the paper.

For every candidate label ``y_i`` the test input is refined by a weak *targeted* attack toward
``y_i`` (eq. 9), the model's probability of ``y_i`` on its own refined input is taken (eq. 11),
and the probabilities are normalized over labels (eq. 12). ``log sum_j p_j`` is the pNML regret
(eq. 8).

Cost, near its floor (``benchmarks/defense_speed.py``): the first refinement step of all H
hypotheses shares one forward of the N inputs, its H input gradients are vector-Jacobian products
of that one graph (cotangent ``softmax - onehot(y_i)``, batched with ``is_grads_batched``), then one
forward of the N*H refined inputs. Batches larger than the memory budget are cut into chunks with
the same result. On CPU two process-level settings matter as much (``results/README.md``): a
channels-last model (:func:`advpnml.models.use_memory_format`) and glibc's allocator tuned so the
N*H tensors are not page-faulted in on every call (:func:`advpnml.accel.allocator.tune_cpu_allocator`);
the command line does both. The refinement direction
``sign(grad)`` is piecewise constant, so the refined input is written ``x + delta.detach()``: its
gradient w.r.t. ``x`` is the identity. That is the paper's BPDA (Sec. 5.1), made explicit, so
any gradient attack run on this module is the paper's adaptive attack.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import BPDA_MODES, CLIP_BACKWARDS, REFINE_DIRECTIONS, SECOND_ORDER, DefenseSpec
from ..modes import frozen_parameters
from ..validation import check_bounds, check_inputs, check_nonnegative, check_positive_int
from .second_order import refine_through_gradient

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
        gradient_mode: ``"shared"`` (one forward of x, H batched vector-Jacobian products: the
            fastest measured) or ``"expanded"`` (forward and backward of the N*H expanded batch;
            the fallback for models whose backward cannot be batched). Same values either way.
        max_batch: most inputs per model call; larger work is chunked (same result). ``None``
            sizes it from ``memory_budget`` and the model's activation size per input.
        memory_budget: bytes the defense may use for activations; ``None``: half the free GPU
            memory, or a quarter of the available RAM on CPU.
        bpda: the backward of the refinement. ``"identity"`` (ours): the refined input is
            ``x + delta.detach()``, gradient 1 everywhere. ``"clamp"``: the paper's official code,
            ``clamp(x + step.detach())`` with the clamp to ``bounds`` left in the graph, so pixels the
            refinement pushes out of the box get zero gradient (``--protocol paper``). ``"second-order-*"``:
            the refinement differentiated through the gradient it steps along (Appendix B, eq. 15;
            :mod:`advpnml.defense.second_order`). Same forward.
        clip: how the backward treats the clip to ``bounds`` and (several steps) the projection onto the lambda-ball:
            ``"straight"`` (gradient 1, as the identity BPDA always did) or ``"exact"`` (their own derivative: 0
            where the refined value was clipped), for the identity and every second-order backward
            (:data:`advpnml.config.CLIP_BACKWARDS`). Same forward.
        direction: ``"toward"`` (eq. 9: each label's refined input moves down its loss) or ``"away"``: up it,
            so p_i is the probability label i keeps after a lambda-step that attacks it. A variant, not the
            paper's: it denies every wrong label the free step toward it that the attack through the defense
            exploits (``results/mechanism/``).

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
        gradient_mode: str = "shared",
        max_batch: int | None = None,
        memory_budget: int | None = None,
        bpda: str = "identity",
        direction: str = "toward",
        clip: str = "straight",
    ) -> None:
        super().__init__()
        if clip not in CLIP_BACKWARDS:
            raise ValueError(f"clip must be one of {', '.join(CLIP_BACKWARDS)}, got {clip!r}")
        self.clip = clip
        if direction not in REFINE_DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(REFINE_DIRECTIONS)}, got {direction!r}")
        self.direction = direction
        if bpda not in BPDA_MODES:
            raise ValueError(f"bpda must be one of {', '.join(BPDA_MODES)}, got {bpda!r}")
        self.bpda = bpda
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
        if gradient_mode not in ("shared", "expanded"):
            raise ValueError(f"gradient_mode must be 'shared' or 'expanded', got {gradient_mode!r}")
        self.gradient_mode = gradient_mode
        self.max_batch = None if max_batch is None else check_positive_int("max_batch", max_batch)
        self.memory_budget = None if memory_budget is None else check_positive_int("memory_budget", memory_budget)
        self.num_classes: int | None = None
        self._bytes_per_input: dict[tuple, int] = {}

    @classmethod
    def from_spec(
        cls, model: nn.Module, spec: DefenseSpec, bounds: tuple[float, float] | None = (0.0, 1.0), **options
    ) -> AdversarialPnml:
        """The defense a :class:`~advpnml.config.DefenseSpec` describes (a preset's ``[defense]`` table, ``--lam``);
        ``options``: the keyword arguments of :class:`AdversarialPnml` that are not settings (``check_inputs``, ...)."""
        return cls(
            model,
            spec.refine_eps,
            spec.refine_steps,
            top_k=spec.top_k,
            bounds=bounds,
            bpda=spec.bpda,
            direction=spec.direction,
            **options,
        )

    def extra_repr(self) -> str:
        """Lambda, steps, step size, top-k, bounds and (when not the identity) the backward, for ``print(defense)``."""
        return (
            f"refine_eps={self.refine_eps:g}, refine_steps={self.refine_steps}, step_size={self.step_size:g}, "
            f"top_k={self.top_k}, bounds={self.bounds}"
            + (f", bpda={self.bpda}" if self.bpda != "identity" else "")
            + (f", direction={self.direction}" if self.direction != "toward" else "")
            + (f", clip={self.clip}" if self.clip != "straight" else "")
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
            self._check_dtype(x)
        if x.shape[0] == 0:
            return self._empty_output(x)
        shared = None
        if self.gradient_mode == "shared" and not self._second_order(x):
            # The one forward of x: its graph gives the first step's H gradients, its logits the top-k.
            x_leaf = x.detach().requires_grad_(True)
            with torch.enable_grad(), frozen_parameters(self.model):
                shared = (x_leaf, self._input_dependent(self._checked_logits(self._first_forward(x_leaf), len(x))))
        labels = self._hypothesis_labels(x, None if shared is None else shared[1])
        n, h = labels.shape
        with frozen_parameters(self.model):  # the refinement needs input gradients only
            refined = self.refine(x, labels, _shared=shared)
        logits = self._checked_logits(self._chunked_forward(refined.reshape(n * h, *x.shape[1:])), n * h)
        if self.check_inputs and not bool(torch.isfinite(logits.detach()).all()):
            raise ValueError("the model returned NaN or inf logits on the refined inputs; the defense's output would be NaN")
        num_classes = logits.shape[-1]
        log_p_own = F.log_softmax(logits.view(n, h, num_classes), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        regret = torch.logsumexp(log_p_own, dim=1)
        if h == num_classes and self.top_k is None:
            return PnmlOutput(log_q=log_p_own - regret.unsqueeze(1), log_p=log_p_own, regret=regret, labels=labels)
        # Excluded labels are masked after normalizing over the refined ones: the refined labels' log q are <= 0 with
        # a maximum >= -log H, so an excluded label can never win, whatever the logits' scale.
        excluded = torch.full((n, num_classes), EXCLUDED_LOG_PROB, dtype=log_p_own.dtype, device=x.device)
        return PnmlOutput(
            log_q=excluded.scatter(1, labels, log_p_own - regret.unsqueeze(1)),
            log_p=excluded.scatter(1, labels, log_p_own),
            regret=regret,
            labels=labels,
        )

    def _empty_output(self, x: torch.Tensor) -> PnmlOutput:
        """The (0, C) output of an empty batch (C from the model, on the empty batch itself if it is not known yet)."""
        if self.num_classes is None:
            with torch.no_grad():
                self.num_classes = self._checked_logits(self.model(x), 0).shape[1]
        empty = x.new_zeros((0, self.num_classes))
        h = self.num_classes if self.top_k is None else self.top_k
        return PnmlOutput(
            log_q=empty, log_p=empty, regret=x.new_zeros(0), labels=torch.zeros(0, h, dtype=torch.long, device=x.device)
        )

    def _check_dtype(self, x: torch.Tensor) -> None:
        """Inputs in the model's floating dtype: a float64 or half batch to a float32 model is a one-line error."""
        param = next((p for p in self.model.parameters() if p.is_floating_point()), None)
        if param is not None and param.dtype != x.dtype:
            raise ValueError(
                f"x has dtype {x.dtype} but the model's parameters are {param.dtype}; convert one of them "
                f"(e.g. x.to({param.dtype}))"
            )

    def refine(
        self, x: torch.Tensor, labels: torch.Tensor, _shared: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Eq. 9 for every (sample, hypothesis) pair: returns refined inputs of shape (N, H, ...).

        ``labels`` is (N, H). The returned tensor is ``x + delta`` with ``delta`` detached, so its
        gradient w.r.t. ``x`` is the identity (BPDA) while its value is the refined input; with ``clip="exact"``
        the steps are replayed on ``x`` with ``sign`` detached and the clip (and projection) in the graph.
        """
        if self._second_order(x):
            return refine_through_gradient(
                self.model,
                x,
                labels,
                self._signed_step,
                self.refine_steps,
                self.refine_eps,
                self.bounds,
                self.bpda,
                self.clip,
            )
        n, h = labels.shape
        flat_shape = (n * h, *x.shape[1:])
        start = x.detach().unsqueeze(1).expand(n, h, *x.shape[1:]).reshape(flat_shape)
        exact = self.clip == "exact" and self.bpda == "identity" and torch.is_grad_enabled() and x.requires_grad
        traced = origin = x.unsqueeze(1).expand(n, h, *x.shape[1:]).reshape(flat_shape) if exact else start
        targets = labels.reshape(-1)
        current = unclamped = start
        with torch.enable_grad():
            for step in range(self.refine_steps):
                if step == 0 and self.gradient_mode == "shared":
                    grad = self._shared_first_gradients(x.detach(), labels, _shared).reshape(flat_shape)
                else:
                    grad = self._expanded_gradients(current.detach(), targets)
                # Targeted step: move *down* the loss of the hypothesised label (eq. 2 / eq. 9); "away": up it.
                move = (self._signed_step * grad.sign()).detach()
                current = current.detach() - move
                traced = traced - move if exact else traced
                if self.refine_steps > 1:
                    current = torch.min(torch.max(current, start - self.refine_eps), start + self.refine_eps)
                    if exact:  # the same values, differentiated: the projection's own derivative
                        traced = torch.min(torch.max(traced, origin - self.refine_eps), origin + self.refine_eps)
                unclamped = current
                if self.bounds is not None:
                    current = current.clamp(*self.bounds)
                    traced = traced.clamp(*self.bounds) if exact else traced
        if exact:
            return traced.view(n, h, *x.shape[1:])
        if self.bpda == "clamp" and self.bounds is not None:
            # The last step's clamp stays in the graph: its value is ``current``, its gradient 0 where it saturates.
            moved = (unclamped - start).detach().view(n, h, *x.shape[1:])
            return (x.unsqueeze(1) + moved).clamp(*self.bounds)
        delta = (current - start).detach().view(n, h, *x.shape[1:])
        return x.unsqueeze(1) + delta

    @property
    def _signed_step(self) -> float:
        return self.step_size if self.direction == "toward" else -self.step_size

    def _second_order(self, x: torch.Tensor) -> bool:
        """Whether this call differentiates the refinement itself (an attack's forward with a second-order backward)."""
        return self.bpda in SECOND_ORDER and torch.is_grad_enabled() and x.requires_grad

    def with_backward(self, bpda: str | None = None, clip: str | None = None) -> AdversarialPnml:
        """The same defense (same model, same forward) with another backward through the refinement: what an attack
        column with ``backward = ...`` (:data:`advpnml.config.BPDA_MODES`) and ``clip = ...``
        (:data:`advpnml.config.CLIP_BACKWARDS`) runs against; None keeps this defense's own."""
        if bpda is not None and bpda not in BPDA_MODES:
            raise ValueError(f"backward must be one of {', '.join(BPDA_MODES)}, got {bpda!r}")
        if clip is not None and clip not in CLIP_BACKWARDS:
            raise ValueError(f"clip must be one of {', '.join(CLIP_BACKWARDS)}, got {clip!r}")
        other = copy.copy(self)
        other.bpda = self.bpda if bpda is None else bpda
        other.clip = self.clip if clip is None else clip
        return other

    def _shared_first_gradients(
        self, x: torch.Tensor, labels: torch.Tensor, shared: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """(N, H, ...) gradients of CE(f(x), y_i) w.r.t. x for every hypothesis, from one forward of x.

        d CE / d logits = softmax(logits) - onehot(y_i): H cotangents of the same graph, so the H input
        gradients are H vector-Jacobian products, computed batched (vmap over the backward).
        """
        n, h = labels.shape
        if shared is None:
            x = x.requires_grad_(True)
            logits = self._input_dependent(self._checked_logits(self.model(x), len(x)))
        else:
            x, logits = shared
        probs = logits.detach().float().softmax(-1).to(logits.dtype)
        # onehot(y_i) by scatter: F.one_hot checks the labels' range on the host (a device sync a CUDA graph cannot hold)
        onehot = probs.new_zeros((h, n, logits.shape[-1])).scatter_(-1, labels.t().unsqueeze(-1), 1.0)
        cotangents = probs.unsqueeze(0) - onehot  # (H, N, C)
        per_chunk = max(1, self._max_batch(x) // max(n, 1))
        grads = []
        for i in range(0, h, per_chunk):
            last = i + per_chunk >= h
            (g,) = torch.autograd.grad(
                logits, x, grad_outputs=cotangents[i : i + per_chunk], is_grads_batched=True, retain_graph=not last
            )
            grads.append(g)
        return torch.cat(grads).transpose(0, 1)

    def _expanded_gradients(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Gradient of each input's CE toward its own target, on the expanded batch (chunked)."""
        grads = []
        chunk = self._max_batch(inputs[:1])
        for i in range(0, inputs.shape[0], chunk):
            part = inputs[i : i + chunk].detach().requires_grad_(True)
            # Summed per-sample losses: each input's gradient is its own (the model is per-sample in eval mode).
            logits = self._input_dependent(self._checked_logits(self.model(part), len(part)))
            loss = F.cross_entropy(logits, targets[i : i + chunk], reduction="sum")
            grads.append(torch.autograd.grad(loss, part)[0])
        return torch.cat(grads)

    def _chunked_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``model(inputs)`` in chunks of at most ``max_batch``; under autograd each chunk is
        checkpointed, so an attack's backward holds one chunk's activations at a time."""
        chunk = self._max_batch(inputs[:1])
        if inputs.shape[0] <= chunk:
            return self.model(inputs)
        from torch.utils.checkpoint import checkpoint

        parts = []
        for i in range(0, inputs.shape[0], chunk):
            part = inputs[i : i + chunk]
            if torch.is_grad_enabled() and part.requires_grad:
                parts.append(checkpoint(self.model, part, use_reentrant=False))
            else:
                parts.append(self.model(part))
        return torch.cat(parts)

    def _max_batch(self, x: torch.Tensor) -> int:
        """Inputs per model call: ``max_batch``, or the memory budget over the activation bytes of one input."""
        if self.max_batch is not None:
            return self.max_batch
        key = (tuple(x.shape[1:]), x.dtype, x.device.type)
        if key not in self._bytes_per_input:
            self._bytes_per_input[key] = _activation_bytes(self.model, x[:1].detach())
        budget = self.memory_budget or _default_memory_budget(x.device)
        return max(1, budget // self._bytes_per_input[key])

    def _hypothesis_labels(self, x: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """(N, H) labels to refine toward: all classes, or the top-k of the unrefined prediction ``logits``."""
        n = x.shape[0]
        if self.top_k is None:
            if self.num_classes is None:
                # Learn C once from a single input, so the full defense costs no extra forward of the batch.
                self.num_classes = (logits if logits is not None else self._logits_without_grad(x[:1])).shape[1]
            return torch.arange(self.num_classes, device=x.device).expand(n, self.num_classes)
        logits = (logits if logits is not None else self._logits_without_grad(x)).detach()
        self.num_classes = logits.shape[1]
        if self.top_k > self.num_classes:
            raise ValueError(f"top_k must be in [1, {self.num_classes}] (the number of classes), got {self.top_k}")
        return logits.topk(self.top_k, dim=1).indices.sort(dim=1).values

    def _logits_without_grad(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._checked_logits(self._first_forward(x), len(x))

    def _first_forward(self, x: torch.Tensor):
        """The model on the unrefined batch; a shape the model cannot take is a one-line error naming it."""
        try:
            return self.model(x)
        except RuntimeError as err:
            if "shape" not in str(err) and "size" not in str(err) and "dimension" not in str(err) and "Expected" not in str(err):
                raise
            raise ValueError(f"the model cannot take inputs of shape {tuple(x.shape)}: {str(err).splitlines()[0]}") from None

    def _checked_logits(self, logits: torch.Tensor, rows: int) -> torch.Tensor:
        """``logits`` if they are floating (rows, C) logits with the class count of earlier calls; one line otherwise."""
        if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
            kind = type(logits).__name__ if not isinstance(logits, torch.Tensor) else f"a {logits.dtype} tensor"
            raise ValueError(f"model must return floating logits of shape (N, C), got {kind}")
        if logits.dim() != 2:
            raise ValueError(f"model must return logits of shape (N, C), got shape {tuple(logits.shape)}")
        if logits.shape[0] != rows:
            raise ValueError(
                f"model returned {logits.shape[0]} rows of logits for {rows} inputs; it must return one row per input"
            )
        if logits.shape[1] < 2:
            raise ValueError(f"model must return at least 2 logits per input (one per class), got {logits.shape[1]}")
        if self.num_classes is not None and logits.shape[1] != self.num_classes:
            raise ValueError(
                f"model returned {logits.shape[1]} classes after {self.num_classes} on an earlier call; "
                "the defense needs the same classes on every call"
            )
        return logits

    @staticmethod
    def _input_dependent(logits: torch.Tensor) -> torch.Tensor:
        """``logits`` if they depend on the input; the refinement (eq. 9) needs their gradient."""
        if not logits.requires_grad:
            raise ValueError(
                "the model's logits do not depend on its input (no gradient reaches it): the refinement of "
                "eq. 9 steps along that gradient; is the model constant, or run under torch.no_grad inside?"
            )
        return logits


def _activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Estimated memory of one input's forward and backward: 3x the bytes of every leaf module's output
    (activations kept for backward, their gradients, workspace), measured with forward hooks."""
    total = [x.numel() * x.element_size()]

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return max(1, 3 * total[0])


def _default_memory_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
        return available // 4
    except (OSError, StopIteration):
        return 4 << 30
