"""The two attacks that had no reference: our HopSkipJump against Foolbox 3's on the same model, radius and query budget
(Table 1's black-box column rests on it), and IBM ART's PGD through the defense wrapped as an ART classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advpnml import AdversarialPnml
from advpnml.attacks import PGD, HopSkipJump

from ..conftest import accuracy

N = 50
RADII = (0.15, 0.2)
# Ours may not be meaningfully weaker: at most 2 samples of 50 more left robust, and a median distance at most 10% longer.
TOLERANCE, DISTANCE_SLACK = 2 / N, 1.10


class _Counter(nn.Module):
    """Counts the inputs a model sees: the queries of a decision-based attack."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs += len(x)
        return self.model(x)


def test_our_hopskipjump_is_not_weaker_than_foolboxs_at_the_same_query_budget(standard_model, mnist5k_test):
    foolbox = pytest.importorskip("foolbox", reason="the reference HopSkipJump is the test extra's foolbox")
    x, y = mnist5k_test.x[:N], mnist5k_test.y[:N]
    counted = _Counter(standard_model).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        attack = foolbox.attacks.HopSkipJumpAttack(steps=5, constraint="linf")
        raw, _, success = attack(foolbox.PyTorchModel(counted, bounds=(0, 1)), x, y, epsilons=list(RADII))
    budget = counted.inputs // N  # Foolbox's queries per sample: its initial search, gradient estimates and binary searches
    theirs_distance = (raw[0] - x).flatten(1).abs().amax(1).median().item()
    for eps, fooled in zip(RADII, success):
        theirs = 1 - fooled.float().mean().item()
        ours_attack = HopSkipJump(eps, max_queries=budget, seed=0)
        ours = accuracy(standard_model, ours_attack(standard_model, x, y), y)
        assert int(ours_attack.queries.max()) <= budget
        assert 0 < theirs < accuracy(standard_model, x, y), "the radius leaves something to compare"
        assert ours <= theirs + TOLERANCE, f"eps {eps}: ours leaves {ours:.2f}, Foolbox {theirs:.2f} at {budget} queries"
    assert ours_attack.distances.median().item() <= theirs_distance * DISTANCE_SLACK


@pytest.fixture(scope="module")
def art_classifier(robust_model):
    art = pytest.importorskip("art", reason="ART interop is tested with the test extra's adversarial-robustness-toolbox")
    from art.estimators.classification import PyTorchClassifier

    defended = AdversarialPnml(robust_model, 0.1).eval()
    # log q are log-probabilities: NLL on them is cross-entropy on q, and softmax(log q) = q, so ART reads them as logits
    return (
        art,
        defended,
        PyTorchClassifier(
            model=defended, loss=nn.NLLLoss(), input_shape=(1, 28, 28), nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu"
        ),
    )


def test_art_sees_the_defense_with_its_identity_backward(art_classifier, mnist5k_test):
    _, defended, classifier = art_classifier
    x, y = mnist5k_test.x[:6], mnist5k_test.y[:6]
    np.testing.assert_allclose(classifier.predict(x.numpy()), defended(x).detach().numpy(), atol=1e-5)
    theirs = classifier.loss_gradient(x.numpy(), np.eye(10, dtype=np.float32)[y.numpy()])
    leaf = x.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(F.nll_loss(defended(leaf), y), leaf)
    np.testing.assert_allclose(theirs, ours.numpy(), atol=1e-6)


def test_arts_pgd_through_the_defense_matches_ours(art_classifier, mnist5k_test):
    art, defended, classifier = art_classifier
    from art.attacks.evasion import ProjectedGradientDescent

    x, y = mnist5k_test.x[:100], mnist5k_test.y[:100]
    eps, steps = 0.15, 20
    theirs_attack = ProjectedGradientDescent(
        classifier, eps=eps, eps_step=2.5 * eps / steps, max_iter=steps, num_random_init=1, batch_size=100, verbose=False
    )
    np.random.seed(0)
    theirs = accuracy(defended, torch.from_numpy(theirs_attack.generate(x.numpy(), y=y.numpy())), y)
    ours = accuracy(defended, PGD(eps, steps, 2.5 * eps / steps, seed=0)(defended, x, y), y)
    assert 0.1 < theirs < accuracy(defended, x, y), "the radius leaves something to compare"
    assert abs(ours - theirs) <= 0.03, f"ART's PGD leaves {theirs:.2f}, ours {ours:.2f} (same steps, step size and start)"
