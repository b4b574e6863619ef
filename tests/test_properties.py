"""The invariants the paper's equations imply, on random small models and shapes (hypothesis).

- eq. 12 normalizes: ``logsumexp(log q) = 0`` for every sample;
- the defense is per sample: a sample's output does not depend on the rest of its batch, nor on chunking;
- relabelling is equivariant: permuting the model's output classes permutes log q the same way;
- ``top_k = C`` refines every label, so it equals the full defense;
- refined inputs (eq. 9) stay inside the box and within lambda of the input (the multi-step ball);
- every attack's output stays inside the eps-ball and the box.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from advpnml import AdversarialPnml
from advpnml.attacks import APGD, APGDT, FGSM, PGD, Square

SETTINGS = settings(max_examples=20, deadline=None)


class Net(nn.Module):
    """A random MLP on (N, C, H, W) inputs in [0, 1], float64 so per-sample and batched results agree to 1e-10."""

    def __init__(self, seed: int, shape: tuple[int, int, int], classes: int, hidden: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        dim = shape[0] * shape[1] * shape[2]
        self.w1 = nn.Parameter(torch.randn(dim, hidden, generator=gen, dtype=torch.float64) / dim**0.5 * 3)
        self.w2 = nn.Parameter(torch.randn(hidden, classes, generator=gen, dtype=torch.float64) / hidden**0.5 * 3)
        self.b = nn.Parameter(torch.randn(classes, generator=gen, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x.flatten(1) @ self.w1) @ self.w2 + self.b


@st.composite
def problems(draw, max_batch: int = 6):
    """A random model, a batch of inputs in [0, 1] and labels."""
    shape = (draw(st.integers(1, 2)), draw(st.integers(2, 4)), draw(st.integers(2, 4)))
    classes = draw(st.integers(2, 6))
    model = Net(draw(st.integers(0, 10_000)), shape, classes, draw(st.integers(3, 12))).eval()
    n = draw(st.integers(1, max_batch))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 10_000)))
    x = torch.rand(n, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    return model, x, y, classes


lams = st.floats(0.0, 0.3)


@SETTINGS
@given(problems(), lams, st.integers(1, 3))
def test_log_q_is_normalized(problem, lam, steps):
    model, x, _, _ = problem
    log_q = AdversarialPnml(model, lam, refine_steps=steps)(x)
    torch.testing.assert_close(log_q.logsumexp(1), torch.zeros(len(x), dtype=x.dtype), atol=1e-10, rtol=0)


@SETTINGS
@given(problems(), lams, st.integers(1, 5), st.sampled_from(["shared", "expanded"]))
def test_a_sample_does_not_depend_on_its_batch_or_the_chunking(problem, lam, chunk, mode):
    model, x, _, _ = problem
    whole = AdversarialPnml(model, lam, gradient_mode=mode)(x)
    alone = torch.cat([AdversarialPnml(model, lam, gradient_mode=mode)(x[i : i + 1]) for i in range(len(x))])
    chunked = AdversarialPnml(model, lam, gradient_mode=mode, max_batch=chunk)(x)
    torch.testing.assert_close(alone, whole, atol=1e-10, rtol=0)
    torch.testing.assert_close(chunked, whole, atol=1e-10, rtol=0)


@SETTINGS
@given(problems(), lams, st.randoms(use_true_random=False))
def test_permuting_the_classes_permutes_log_q(problem, lam, rng):
    model, x, _, classes = problem
    perm = list(range(classes))
    rng.shuffle(perm)
    permuted = nn.Sequential(model, _Select(torch.tensor(perm))).eval()
    torch.testing.assert_close(AdversarialPnml(permuted, lam)(x), AdversarialPnml(model, lam)(x)[:, perm], atol=1e-10, rtol=0)


class _Select(nn.Module):
    def __init__(self, index: torch.Tensor) -> None:
        super().__init__()
        self.index = index

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, self.index]


@SETTINGS
@given(problems(), lams)
def test_top_k_of_every_class_is_the_full_defense(problem, lam):
    model, x, _, classes = problem
    torch.testing.assert_close(AdversarialPnml(model, lam, top_k=classes)(x), AdversarialPnml(model, lam)(x), atol=1e-10, rtol=0)


@SETTINGS
@given(problems(), lams, st.integers(1, 4))
def test_refined_inputs_stay_in_the_box_and_the_lambda_ball(problem, lam, steps):
    model, x, _, classes = problem
    defense = AdversarialPnml(model, lam, refine_steps=steps)
    refined = defense.refine(x, torch.arange(classes).expand(len(x), classes))
    assert refined.min() >= 0 and refined.max() <= 1
    assert (refined - x.unsqueeze(1)).abs().max() <= lam + 1e-12


def _attacks(eps: float):
    return [
        FGSM(eps),
        PGD(eps, steps=3, step_size=eps / 2, restarts=2),
        APGD(eps, steps=4),
        APGDT(eps, steps=3, n_targets=2),
        Square(eps, max_queries=20),
    ]


@SETTINGS
@given(problems(max_batch=4), st.floats(0.0, 0.5), st.integers(0, 4), st.booleans())
def test_every_attack_stays_inside_the_eps_ball_and_the_box(problem, eps, which, defended):
    model, x, y, classes = problem
    assume(which != 3 or classes >= 4)  # APGD-T's targeted DLR loss needs 4 classes (a one-line error otherwise)
    target = AdversarialPnml(model, 0.1) if defended else model
    attack = _attacks(eps)[which]
    x_adv = attack(target, x, y)
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= eps + 1e-12
