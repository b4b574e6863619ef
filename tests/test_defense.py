"""The defense against a direct, loop-based computation of eqs. 9-12 of the paper."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advpnml import AdversarialPnml
from advpnml.defense import EXCLUDED_LOG_PROB

from .conftest import CallCounter


def reference_pnml(model, x, lam, steps=1, step_size=None, top_k=None, bounds=(0.0, 1.0), direction="toward"):
    """Eqs. 9-12 one sample and one label at a time (``away``: each step up the label's loss): (q, p, regret, deltas)."""
    step_size = lam / steps if step_size is None else step_size
    step_size = step_size if direction == "toward" else -step_size
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    q = torch.zeros(x.shape[0], num_classes, dtype=x.dtype)
    p = torch.zeros_like(q)
    deltas = torch.zeros(x.shape[0], num_classes, *x.shape[1:], dtype=x.dtype)
    for n in range(x.shape[0]):
        xn = x[n : n + 1]
        labels = range(num_classes)
        if top_k is not None:
            with torch.no_grad():
                labels = model(xn)[0].topk(top_k).indices.tolist()
        for i in labels:
            xi = xn.clone()
            for _ in range(steps):
                xi.requires_grad_(True)
                loss = F.cross_entropy(model(xi), torch.tensor([i]))
                (g,) = torch.autograd.grad(loss, xi)
                xi = xi.detach() - step_size * g.sign()
                xi = torch.min(torch.max(xi, xn - lam), xn + lam)
                if bounds is not None:
                    xi = xi.clamp(*bounds)
            with torch.no_grad():
                p[n, i] = F.softmax(model(xi), dim=1)[0, i]
            deltas[n, i] = (xi - xn)[0]
        q[n] = p[n] / p[n].sum()
    return q, p, p.sum(1).log(), deltas


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(refine_eps=0.1),
        dict(refine_eps=0.3),
        dict(refine_eps=0.03, refine_steps=4),
        dict(refine_eps=0.1, refine_steps=2, step_size=0.08),
        dict(refine_eps=0.1, top_k=2),
        dict(refine_eps=0.2, top_k=1),
        dict(refine_eps=0.1, direction="away"),
        dict(refine_eps=0.03, refine_steps=4, direction="away"),
        dict(refine_eps=0.2, top_k=2, direction="away"),
    ],
)
def test_matches_loop_reference(tiny_mlp, kwargs):
    torch.manual_seed(1)
    x = torch.rand(7, 6, dtype=torch.float64)
    defense = AdversarialPnml(tiny_mlp, **kwargs)
    out = defense.hypotheses(x)
    q, p, regret, _ = reference_pnml(
        tiny_mlp,
        x,
        kwargs["refine_eps"],
        kwargs.get("refine_steps", 1),
        kwargs.get("step_size"),
        kwargs.get("top_k"),
        direction=kwargs.get("direction", "toward"),
    )
    torch.testing.assert_close(out.log_q.exp(), q, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.probs, p, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.regret, regret, atol=1e-5, rtol=0)


def test_matches_reference_on_cnn(tiny_cnn):
    torch.manual_seed(2)
    model = tiny_cnn.double()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    q, _, _, _ = reference_pnml(model, x, 0.1)
    torch.testing.assert_close(AdversarialPnml(model, 0.1)(x).exp(), q, atol=1e-5, rtol=0)


def test_q_is_a_distribution_and_refinement_moves_inputs(tiny_cnn):
    x = torch.rand(5, 1, 28, 28)
    defense = AdversarialPnml(tiny_cnn, 0.1)
    log_q = defense(x)
    assert log_q.shape == (5, 10)
    torch.testing.assert_close(log_q.exp().sum(1), torch.ones(5))
    refined = defense.refine(x, torch.arange(10).expand(5, 10))
    moved = (refined - x.unsqueeze(1)).abs()
    assert moved.max() <= 0.1 + 1e-6 and moved.max() > 0.05
    assert refined.min() >= 0 and refined.max() <= 1


def test_zero_lambda_is_the_base_model(tiny_cnn):
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(AdversarialPnml(tiny_cnn, 0.0)(x), F.log_softmax(tiny_cnn(x), dim=1), atol=1e-6, rtol=0)


def test_cost_is_one_forward_of_x_then_one_forward_of_the_refined_batch(tiny_cnn):
    counter = CallCounter(tiny_cnn)
    defense = AdversarialPnml(counter, 0.1)
    defense(torch.rand(6, 1, 28, 28))  # the first call also sizes the chunks from one input
    counter.batch_sizes.clear()
    defense(torch.rand(6, 1, 28, 28))
    assert counter.batch_sizes == [6, 60], "one forward of x (its graph gives all 10 gradients), one forward of 6*10 refined"
    counter.batch_sizes.clear()
    AdversarialPnml(counter, 0.1, max_batch=1000, top_k=3)(torch.rand(6, 1, 28, 28))
    assert counter.batch_sizes == [6, 18], "the same forward of x picks the top-3, then 6*3 refined inputs"
    counter.batch_sizes.clear()
    AdversarialPnml(counter, 0.1, max_batch=1000, gradient_mode="expanded")(torch.rand(6, 1, 28, 28))
    assert counter.batch_sizes == [1, 60, 60], "C once, then forward+backward and forward of the expanded batch"


@pytest.mark.parametrize("steps", [1, 3])
def test_chunking_and_gradient_modes_give_the_same_values_and_gradients(tiny_mlp, steps):
    torch.manual_seed(5)
    x = torch.rand(5, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    variants = {
        "shared": AdversarialPnml(tiny_mlp, 0.1, steps),
        "expanded": AdversarialPnml(tiny_mlp, 0.1, steps, gradient_mode="expanded"),
        "chunked": AdversarialPnml(tiny_mlp, 0.1, steps, max_batch=3),
        "budget": AdversarialPnml(tiny_mlp, 0.1, steps, memory_budget=1),  # one input per model call
    }
    outputs = {}
    for name, defense in variants.items():
        xr = x.clone().requires_grad_(True)
        log_q = defense(xr)
        (grad,) = torch.autograd.grad(F.nll_loss(log_q, y), xr)
        outputs[name] = (log_q.detach(), grad)
    for name in ("expanded", "chunked", "budget"):
        torch.testing.assert_close(outputs[name][0], outputs["shared"][0], msg=name)
        torch.testing.assert_close(outputs[name][1], outputs["shared"][1], msg=name)
    counter = CallCounter(tiny_mlp)
    AdversarialPnml(counter, 0.1, steps, max_batch=3)(x)
    assert max(counter.batch_sizes) <= 5 and sum(counter.batch_sizes[-7:]) == 20  # last forward: 5*4 refined in chunks of 3


def test_top_k_equal_to_num_classes_is_the_full_defense(tiny_cnn):
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(AdversarialPnml(tiny_cnn, 0.1, top_k=10)(x), AdversarialPnml(tiny_cnn, 0.1)(x), atol=1e-6, rtol=0)


def test_top_k_excluded_labels_get_zero_probability_and_finite_gradients(tiny_cnn):
    x = torch.rand(8, 1, 28, 28, requires_grad=True)
    out = AdversarialPnml(tiny_cnn, 0.1, top_k=2).hypotheses(x)
    q = out.log_q.exp()
    assert ((q > 0).sum(1) == 2).all()
    torch.testing.assert_close(q.sum(1), torch.ones(8))
    assert torch.isfinite(out.log_q).all() and (out.log_p[q == 0] == EXCLUDED_LOG_PROB).all()
    # Labels outside the top-2 are the common case for a true label under attack: the loss must stay finite.
    loss = F.cross_entropy(out.log_q, torch.arange(8) % 10)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_gradient_is_identity_through_the_refinement(tiny_mlp):
    """d log q / dx equals the gradient of log q evaluated at x + delta with delta held constant (BPDA)."""
    torch.manual_seed(3)
    x = torch.rand(4, 6, dtype=torch.float64, requires_grad=True)
    defense = AdversarialPnml(tiny_mlp, 0.1)
    y = torch.tensor([0, 1, 2, 3])
    (grad,) = torch.autograd.grad(F.nll_loss(defense(x), y, reduction="sum"), x)

    _, _, _, deltas = reference_pnml(tiny_mlp, x.detach(), 0.1)
    xr = x.detach().clone().requires_grad_(True)
    refined = xr.unsqueeze(1) + deltas  # (N, C, 6), delta constant
    log_p = F.log_softmax(tiny_mlp(refined.view(-1, 6)).view(4, 4, 4), dim=-1).diagonal(dim1=1, dim2=2)
    log_q = log_p - log_p.logsumexp(1, keepdim=True)
    (expected,) = torch.autograd.grad(F.nll_loss(log_q, y, reduction="sum"), xr)
    torch.testing.assert_close(grad, expected)
    assert grad.abs().sum() > 0


def test_works_under_no_grad_and_leaves_parameter_grads_alone(tiny_cnn):
    x = torch.rand(3, 1, 28, 28)
    defense = AdversarialPnml(tiny_cnn, 0.1)
    expected = defense(x).detach()
    with torch.no_grad():
        out = defense(x)
    torch.testing.assert_close(out, expected)
    assert all(p.grad is None for p in tiny_cnn.parameters())


def test_regret_is_log_sum_of_hypothesis_probabilities(tiny_cnn):
    x = torch.rand(3, 1, 28, 28)
    defense = AdversarialPnml(tiny_cnn, 0.1)
    out = defense.hypotheses(x)
    torch.testing.assert_close(defense.regret(x), out.probs.sum(1).log())
    assert torch.isfinite(out.regret).all()
    assert out.regret.shape == (3,)


def test_unbounded_inputs_are_not_clamped(tiny_mlp):
    x = torch.full((2, 6), 5.0, dtype=torch.float64)
    defense = AdversarialPnml(tiny_mlp, 0.5, bounds=None)
    refined = defense.refine(x, torch.arange(4).expand(2, 4))
    assert refined.max() > 5.0 or refined.min() < 5.0
    assert (refined - x.unsqueeze(1)).abs().max() <= 0.5 + 1e-12


def test_away_variant_lowers_what_toward_raises_and_comes_from_the_settings(tiny_cnn):
    from advpnml.config import AttackSpec, DefenseSpec, EvalSettings

    torch.manual_seed(3)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        before = F.softmax(tiny_cnn(x), 1)
        toward = AdversarialPnml(tiny_cnn, 0.1).hypotheses(x).probs
        away = AdversarialPnml(tiny_cnn, 0.1, direction="away").hypotheses(x).probs
    assert (toward >= before - 1e-6).float().mean() > 0.9 and (away <= before + 1e-6).float().mean() > 0.9
    settings = EvalSettings("mnist", "test", 4, 0.3, 0.1, [AttackSpec("FGSM", "fgsm")])
    assert settings.digest() == EvalSettings("mnist", "test", 4, 0.3, 0.1, [AttackSpec("FGSM", "fgsm")]).digest()
    varied = EvalSettings("mnist", "test", 4, 0.3, 0.1, [AttackSpec("FGSM", "fgsm")], refine_direction="away")
    assert varied.digest() != settings.digest() and varied.defense == DefenseSpec(0.1, direction="away")
    assert "direction=away" in repr(AdversarialPnml.from_spec(tiny_cnn, varied.defense))
    with pytest.raises(ValueError, match="direction must be one of toward, away, got 'sideways'"):
        DefenseSpec(0.1, direction="sideways")
