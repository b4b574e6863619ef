"""APGD-CE/DLR, APGD-T, Square and the joint-hypotheses attack: threat model, strength, schedule, seeding."""

from __future__ import annotations

import pytest
import torch

from advpnml import AdversarialPnml
from advpnml.attacks import APGD, APGDT, PGD, JointHypotheses, Square, create_attack, dlr, dlr_targeted
from advpnml.attacks.apgd import checkpoints

from ..conftest import CallCounter, accuracy

TOL = 1e-6


@pytest.fixture(scope="module")
def batch(mnist5k_test):
    return mnist5k_test.x[:48], mnist5k_test.y[:48]


@pytest.mark.parametrize(
    "make",
    [
        lambda: APGD(0.1, steps=8),
        lambda: APGD(0.1, steps=8, loss="dlr"),
        lambda: APGDT(0.1, steps=4, n_targets=2),
        lambda: Square(0.1, max_queries=40),
    ],
)
def test_inside_eps_ball_and_unit_box(standard_model, batch, make):
    x, y = batch
    attack = make()
    x_adv = attack(standard_model, x, y)
    assert x_adv.shape == x.shape and torch.isfinite(x_adv).all()
    assert (x_adv - x).abs().max() <= attack.eps + TOL and x_adv.min() >= 0 and x_adv.max() <= 1


def test_each_attack_breaks_a_standard_model(standard_model, batch):
    x, y = batch
    assert accuracy(standard_model, x, y) > 0.85
    for attack in (APGD(0.3, steps=20), APGD(0.3, steps=20, loss="dlr"), APGDT(0.3, steps=10, n_targets=2)):
        assert accuracy(standard_model, attack(standard_model, x, y), y) <= 0.03, attack
    square = Square(0.3, max_queries=300)
    assert accuracy(standard_model, square(standard_model, x, y), y) <= 0.1
    assert int(square.queries.max()) <= 300 and int(square.queries.min()) >= 1


def test_joint_hypotheses_attack_breaks_the_defended_standard_model(standard_model, batch):
    x, y = batch[0][:24], batch[1][:24]
    defense = AdversarialPnml(standard_model, 0.1)
    x_adv = JointHypotheses(0.3, steps=20, step_size=0.03)(defense, x, y)
    assert (x_adv - x).abs().max() <= 0.3 + TOL and x_adv.min() >= 0 and x_adv.max() <= 1
    assert accuracy(defense, x_adv, y) <= 0.1
    with pytest.raises(ValueError, match="AdversarialPnml"):
        JointHypotheses(0.3, steps=2)(standard_model, x, y)


def test_apgd_matches_or_beats_pgd_at_equal_budget_on_a_robust_model(robust_model, mnist5k_test):
    x, y = mnist5k_test.x[:200], mnist5k_test.y[:200]
    pgd = accuracy(robust_model, PGD(0.3, steps=20, step_size=0.3 * 2.5 / 20)(robust_model, x, y), y)
    apgd = accuracy(robust_model, APGD(0.3, steps=20)(robust_model, x, y), y)
    assert pgd > 0.1, "the model is robust enough for the comparison to mean something"
    assert apgd <= pgd + 1 / len(y), (apgd, pgd)


@pytest.mark.parametrize(
    "make", [lambda mode: APGD(0.08, steps=12, early_stop=mode), lambda mode: APGDT(0.08, steps=6, n_targets=3, early_stop=mode)]
)
def test_apgd_leaving_at_the_first_fooling_step_fools_the_same_samples_for_less_work(standard_model, batch, make):
    """A sample's APGD run never depends on the others' (per-sample step sizes and checkpoints), so computing only the
    undecided samples changes no undecided trajectory: the same samples end fooled, and the robust ones at the same
    points, with fewer inputs through the model."""
    x, y = batch
    counted = {mode: CallCounter(standard_model) for mode in ("restarts", "steps")}
    adv = {mode: make(mode)(counter, x, y) for mode, counter in counted.items()}
    with torch.no_grad():
        fooled = {mode: standard_model(a).argmax(1) != y for mode, a in adv.items()}
    assert fooled["steps"].equal(fooled["restarts"])
    assert 0 < int(fooled["steps"].sum()) < len(y), "some samples fall and some stand: the test can tell the modes apart"
    robust = ~fooled["steps"]
    assert torch.allclose(adv["steps"][robust], adv["restarts"][robust], atol=1e-6)
    assert (adv["steps"] - x).abs().amax() <= 0.08 + TOL
    assert sum(counted["steps"].batch_sizes) < sum(counted["restarts"].batch_sizes)


def test_apgd_refuses_an_unknown_early_stop():
    with pytest.raises(ValueError, match="early_stop must be"):
        APGD(0.1, early_stop="sometimes")


def test_step_size_checkpoints_follow_croce_and_hein():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10)[:2] == [2, 3]


def test_dlr_losses_by_hand():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    y = torch.tensor([0])
    # correct with margin 2; z_pi1 - z_pi3 = 3 - 0 = 3
    torch.testing.assert_close(dlr(logits, y), torch.tensor([-2.0 / 3]))
    # target 1: (z_t - z_y) / (z_pi1 - (z_pi3 + z_pi4) / 2) = (1 - 3) / (3 + 0.5)
    torch.testing.assert_close(dlr_targeted(logits, y, torch.tensor([1])), torch.tensor([-2.0 / 3.5]))
    assert dlr(logits * 10 + 5, y).item() == pytest.approx(dlr(logits, y).item(), rel=1e-5)  # shift and scale invariant
    with pytest.raises(ValueError, match="at least 3"):
        dlr(torch.zeros(1, 2), torch.tensor([0]))


@pytest.mark.parametrize(
    "name,params", [("apgd", {"steps": 4}), ("apgd-t", {"steps": 3, "n_targets": 2}), ("square", {"max_queries": 20})]
)
def test_seeded_and_global_rng_untouched(standard_model, batch, name, params):
    x, y = batch[0][:8], batch[1][:8]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create_attack(name, eps=0.2, seed=5, **params)(standard_model, x, y)
    after = torch.rand(1)
    b = create_attack(name, eps=0.2, seed=5, **params)(standard_model, x, y)
    assert torch.equal(a, b) and torch.equal(before, after)


def test_square_needs_images(tiny_mlp):
    with pytest.raises(ValueError, match="image inputs"):
        Square(0.1, max_queries=5)(tiny_mlp, torch.rand(2, 6, dtype=torch.float64), torch.tensor([0, 1]))
