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


def _hand_refined_gradient(model, x, y, lam, steps, surrogate=None):
    """d NLL(log q(x), y) / dx with the refinement written out per hypothesis from eq. 9, every clip and projection
    left to autograd (their own derivative), ``sign`` a constant (first order) or straight-through (``ste``)."""
    leaf = x.clone().requires_grad_(True)
    step = lam / steps
    log_p = []
    for i in range(4):
        target = torch.full((len(x),), i)
        z = leaf
        for _ in range(steps):
            if surrogate is None:
                point = z.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(F.cross_entropy(model(point), target, reduction="sum"), point)
                direction = g.sign()
            else:
                (g,) = torch.autograd.grad(F.cross_entropy(model(z), target, reduction="sum"), z, create_graph=True)
                direction = g + (g.sign() - g).detach()  # sign forward, identity backward
            z = z - step * direction
            if steps > 1:
                z = torch.min(torch.max(z, leaf - lam), leaf + lam)
            z = z.clamp(0.0, 1.0)
        log_p.append(F.log_softmax(model(z), -1)[:, i])
    log_p = torch.stack(log_p, 1)
    log_q = log_p - log_p.logsumexp(1, keepdim=True)
    (grad,) = torch.autograd.grad(F.nll_loss(log_q, y, reduction="sum"), leaf)
    return grad


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("bpda", ["identity", "second-order-ste"])
def test_the_exact_clip_is_the_hand_written_refinements_autograd(tiny_mlp, bpda, steps):
    torch.manual_seed(0)
    # half the pixels at the box's edges, where the refinement's step leaves [0, 1] and the clip holds them
    x = torch.rand(3, 6, dtype=torch.float64).round() * torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    x = x + (torch.rand(3, 6, dtype=torch.float64) * 0.8 + 0.1) * torch.tensor([0, 0, 0, 1.0, 1.0, 1.0], dtype=torch.float64)
    y = torch.tensor([0, 2, 3])
    lam = 0.2
    defense = AdversarialPnml(tiny_mlp, lam, refine_steps=steps, bounds=(0.0, 1.0), bpda=bpda, clip="exact").eval()
    leaf = x.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(F.nll_loss(defense(leaf), y, reduction="sum"), leaf)
    expected = _hand_refined_gradient(tiny_mlp, x, y, lam, steps, None if bpda == "identity" else "ste")
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-12)
    (straight,) = torch.autograd.grad(F.nll_loss(defense.with_backward(clip="straight")(leaf), y, reduction="sum"), leaf)
    assert not torch.allclose(straight, ours), "the clip held some pixels: the straight backward differs there"
    with torch.no_grad():
        torch.testing.assert_close(defense(x), defense.with_backward(clip="straight")(x))  # the same forward


def test_one_exact_step_is_the_official_codes_clamp_backward(tiny_mlp):
    x = torch.rand(4, 6, dtype=torch.float64).round()  # every pixel on the box's edge
    y = torch.tensor([0, 1, 2, 3])
    grads = []
    for kwargs in ({"clip": "exact"}, {"bpda": "clamp"}):
        leaf = x.clone().requires_grad_(True)
        defense = AdversarialPnml(tiny_mlp, 0.1, **kwargs).eval()
        grads.append(torch.autograd.grad(F.nll_loss(defense(leaf), y, reduction="sum"), leaf)[0])
    torch.testing.assert_close(*grads, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="clip must be one of straight, exact, got 'soft'"):
        AdversarialPnml(tiny_mlp, 0.1, clip="soft")


def test_the_strong_suites_adaptive_columns_beat_every_backward_combination(robust_model, mnist5k_test):
    """Pinned on a small PGD-trained CNN: the per-sample worst case over the strong suite's margin-PGD columns through
    the defense (straight clip, exact clip, second-order with the exact clip) leaves no more than any combination of
    backward (identity, straight-through or tanh second order) and clip (straight, exact) alone, same budget and seed."""
    from advpnml.attacks import PGD
    from advpnml.config import CLIP_BACKWARDS, from_preset
    from advpnml.evaluation.engine import evaluate
    from advpnml.runtime import QUIET

    data = mnist5k_test.head(30)
    eps, lam, steps = 0.2, 0.1, 10
    columns = ["Adaptive-margin", "Adaptive-margin exact-clip", "Adaptive-margin 2nd-order"]
    sets = [f"{c}.{k}={v}" for c in columns for k, v in (("steps", steps), ("step_size", 2.5 * eps / steps), ("restarts", 1))]
    settings = from_preset("mnist", sets).eval_settings(
        "mnist5k", "test", len(data), eps=eps, refine_eps=lam, suite="strong", only=columns
    )
    suite = evaluate(robust_model, data, settings, runtime=QUIET).robust("defense")
    defended = AdversarialPnml(robust_model, lam).eval()
    for backward in ("identity", "second-order-ste", "second-order-tanh"):
        for clip in CLIP_BACKWARDS:
            attack = PGD(eps, steps, 2.5 * eps / steps, loss="margin", early_stop="steps", seed=0)
            x_adv = attack(defended.with_backward(backward, clip), data.x, data.y)
            with torch.no_grad():
                alone = (defended(data.x).argmax(1) == data.y) & (defended(x_adv).argmax(1) == data.y)
            assert not (suite & ~alone).any(), f"{backward}, {clip} clip breaks a sample the suite leaves"
