"""Every registered attack (timm-style, driven by :data:`advpnml.attacks.ATTACKS`): it stays in the eps-ball and the
input box, a seed fixes its result, and it leaves the caller's global RNG as it found it. A new attack joins these
tests by adding its cheap parameters to ``CHEAP``; one without them fails the first test."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from advpnml import AdversarialPnml
from advpnml.attacks import ATTACKS, create_attack

EPS = 0.1

#: Parameters small enough for a unit test; every attack keeps its own defaults otherwise.
CHEAP = {
    "fgsm": {},
    "pgd": {"steps": 5, "step_size": 0.03, "restarts": 2},
    "apgd": {"steps": 5},
    "apgd-t": {"steps": 5, "n_targets": 2},
    "square": {"max_queries": 30},
    "hsja": {"max_queries": 150, "init_evals": 10, "max_evals": 20},
    "joint": {"steps": 3, "step_size": 0.03},
    "autoattack": {"attacks": ["apgd-ce"]},
}

#: Attacks that only run through the defense.
ON_DEFENSE = {"joint"}


def _model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)  # correctly classified: every attack has work to do
    return model, x, y


def _run(name: str, seed: int) -> torch.Tensor:
    model, x, y = _model_and_data()
    target = AdversarialPnml(model, 0.05) if name in ON_DEFENSE else model
    if name == "autoattack":
        pytest.importorskip("pyautoattack")
    return create_attack(name, eps=EPS, seed=seed, **CHEAP[name])(target, x, y)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_stays_in_the_eps_ball_and_the_box(name):
    assert name in CHEAP, f"attack {name!r} is registered but has no cheap test parameters in CHEAP"
    _, x, _ = _model_and_data()
    x_adv = _run(name, seed=3)
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= EPS + 1e-6, f"{name} leaves the eps-ball"
    assert x_adv.min() >= 0 and x_adv.max() <= 1, f"{name} leaves [0, 1]"


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_is_fixed_by_its_seed_and_leaves_the_global_rng_alone(name):
    state = torch.get_rng_state()
    first = _run(name, seed=5)
    torch.set_rng_state(state)  # _model_and_data seeds the global RNG itself; compare the attack's share alone
    model, x, y = _model_and_data()
    before = torch.get_rng_state()
    target = AdversarialPnml(model, 0.05) if name in ON_DEFENSE else model
    second = create_attack(name, eps=EPS, seed=5, **CHEAP[name])(target, x, y)
    assert torch.equal(torch.get_rng_state(), before), f"{name} moved the global RNG"
    assert torch.equal(first, second), f"{name} gives another result under the same seed"
