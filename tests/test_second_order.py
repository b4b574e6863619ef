"""The second-order backward (Appendix B, eq. 15) against an independent computation: the identity BPDA's gradient
at each refined input, minus lambda times a Hessian-vector product of that hypothesis's loss through the surrogate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from advpnml import AdversarialPnml
from advpnml.config import SECOND_ORDER


def _surrogate_jacobian_t(mode: str, g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """S'(g)^T v for one input's gradient g, written out from the surrogate's definition."""
    if mode == "second-order-ste":
        return v
    if mode == "second-order-tanh":
        tau = g.abs().mean()
        return v * (1 - torch.tanh(g / tau) ** 2) / tau
    unit = g / g.norm()
    return math.sqrt(g.numel()) / g.norm() * (v - unit * (unit * v).sum())


@pytest.mark.parametrize("mode", SECOND_ORDER)
def test_the_gradient_is_bpdas_minus_lambda_times_a_hessian_vector_product(tiny_mlp, mode):
    torch.manual_seed(0)
    lam, x, y = 0.05, torch.rand(2, 6, dtype=torch.float64) * 0.8 + 0.1, torch.tensor([0, 2])
    defense = AdversarialPnml(tiny_mlp, lam, bounds=(0.0, 1.0), bpda=mode).eval()
    leaf = x.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(F.nll_loss(defense(leaf), y, reduction="sum"), leaf)

    # independently: the loss as a function of the refined inputs, their gradients u_i, and H_i S'_i^T u_i per hypothesis
    identity = AdversarialPnml(tiny_mlp, lam, bounds=(0.0, 1.0)).eval()
    labels = torch.arange(4).expand(2, 4)
    refined = identity.refine(x, labels).detach().requires_grad_(True)  # (2, 4, 6)
    log_p = F.log_softmax(tiny_mlp(refined.view(8, 6)), -1).view(2, 4, 4).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    log_q = log_p - log_p.logsumexp(1, keepdim=True)
    (u,) = torch.autograd.grad(F.nll_loss(log_q, y, reduction="sum"), refined)
    expected = u.sum(1).clone()
    for n in range(2):
        for i in range(4):

            def loss_i(z, i=i):
                return F.cross_entropy(tiny_mlp(z.unsqueeze(0)), torch.tensor([i]))

            point = x[n].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(loss_i(point), point)
            w = _surrogate_jacobian_t(mode, g, u[n, i])
            _, hvp = torch.autograd.functional.hvp(loss_i, x[n], w)
            expected[n] -= lam * hvp
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("direction", ["toward", "away"])
@pytest.mark.parametrize("mode", SECOND_ORDER)
def test_the_forward_is_the_defenses_own(tiny_cnn, mode, direction):
    torch.manual_seed(1)
    x = torch.rand(3, 1, 28, 28)
    plain = AdversarialPnml(tiny_cnn, 0.1, direction=direction)
    second = plain.with_backward(mode)
    assert second.bpda == mode and plain.bpda == "identity" and second.model is plain.model
    with torch.no_grad():
        torch.testing.assert_close(second(x), plain(x))
    leaf = x.clone().requires_grad_(True)
    torch.testing.assert_close(second(leaf), plain(x), atol=1e-5, rtol=1e-5)  # the differentiable path computes the same values
    with pytest.raises(ValueError, match="backward must be one of"):
        plain.with_backward("third-order")
