"""The refinement differentiated through its own gradient: the paper's Appendix B attack, with a surrogate for ``sign``.

The refined input of eq. 9, ``x_i(x) = clip(x - lambda * sign(g_i(x)))`` with ``g_i = grad_x CE(f(x), y_i)``, depends
on ``x`` twice: directly, and through the gradient it steps along. Our adaptive attack (BPDA) keeps the first and
drops the second (``d x_i / d x = I``). Keeping both gives eq. 15's Jacobian ``I - lambda * d sign(g_i)/d g_i * H_i``,
with ``H_i`` the Hessian of the loss: ``sign`` has derivative 0 almost everywhere, so its backward is replaced by a
surrogate, and the Hessian is never formed: the backward through ``g_i`` (built with ``create_graph=True``) is a
Hessian-vector product. The forward is unchanged: ``sign`` is applied exactly, so the refined inputs, and every
prediction, are the defense's own.

Surrogates (:data:`advpnml.config.SECOND_ORDER`), each written as the derivative of a smooth stand-in for ``sign``:

- ``second-order-ste``: straight-through, ``d sign(g)/dg = 1``;
- ``second-order-tanh``: ``tanh(g / tau)`` with ``tau`` the mean ``|g|`` of the input (scale-free);
- ``second-order-normalized``: ``sqrt(d) * g / ||g||_2``, the l2-normalized gradient at the scale of ``sign``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g: torch.Tensor) -> torch.Tensor:
        return g.sign()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _SignTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g: torch.Tensor) -> torch.Tensor:
        tau = g.abs().flatten(1).mean(1).clamp_min(1e-30).view(-1, *([1] * (g.dim() - 1)))
        ctx.save_for_backward(g, tau)
        return g.sign()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        g, tau = ctx.saved_tensors
        return grad * (1 - torch.tanh(g / tau) ** 2) / tau


class _SignNormalized(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(g)
        return g.sign()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (g,) = ctx.saved_tensors
        flat, v = g.flatten(1), grad.flatten(1)
        norm = flat.norm(dim=1, keepdim=True).clamp_min(1e-30)
        unit = flat / norm
        # d/dg of sqrt(d) g / ||g|| applied to v: sqrt(d) / ||g|| * (v - unit <unit, v>)
        out = math.sqrt(flat.shape[1]) / norm * (v - unit * (unit * v).sum(1, keepdim=True))
        return out.view_as(g)


SURROGATES = {"second-order-ste": _SignSTE, "second-order-tanh": _SignTanh, "second-order-normalized": _SignNormalized}


def refine_through_gradient(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    step_size: float,
    steps: int,
    radius: float,
    bounds: tuple[float, float] | None,
    surrogate: str,
    clip: str = "straight",
) -> torch.Tensor:
    """Eq. 9 for every (sample, hypothesis) pair as a differentiable function of ``x``: (N, H, ...) refined inputs whose
    backward runs through each step's gradient (a Hessian-vector product per hypothesis) and the ``surrogate``'s
    derivative for ``sign``. ``clip``: ``straight`` passes the gradient through the clip to ``bounds`` and (several
    steps) the projection onto the ``radius``-ball unchanged, as our identity BPDA does; ``exact`` keeps their own
    derivative (0 where a value was clipped or projected)."""
    sign = SURROGATES[surrogate].apply
    n, h = labels.shape
    flat_shape = (n * h, *x.shape[1:])
    start = x.unsqueeze(1).expand(n, h, *x.shape[1:]).reshape(flat_shape)
    targets = labels.reshape(-1)
    current = start
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(model(current), targets, reduction="sum")  # each input's own loss: per-sample gradients
            (grad,) = torch.autograd.grad(loss, current, create_graph=True)
            current = current - step_size * sign(grad)
            if steps > 1:
                current = limited(current, torch.min(torch.max(current, start - radius), start + radius), clip)
            if bounds is not None:
                current = limited(current, current.clamp(*bounds), clip)
    return current.view(n, h, *x.shape[1:])


def limited(before: torch.Tensor, after: torch.Tensor, clip: str) -> torch.Tensor:
    """``after`` (a clip or projection of ``before``) with its own derivative (``exact``) or ``before``'s (``straight``)."""
    return after if clip == "exact" else before + (after - before).detach()
