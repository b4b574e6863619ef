"""Our APGD-CE, APGD-T and Square against the reference AutoAttack (pyautoattack), and the wrapper that runs it."""

from __future__ import annotations

import builtins
import sys

import pytest
import torch
import torch.nn as nn

from advpnml import AdversarialPnml
from advpnml.attacks import APGD, APGDT, ReferenceAutoAttack, Square, create_attack
from advpnml.attacks.autoattack import flag_key

from ..conftest import accuracy

pyautoattack = pytest.importorskip("pyautoattack", reason="the reference AutoAttack is the test extra's pyautoattack")
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted  # noqa: E402
from pyautoattack.square import SquareAttack  # noqa: E402

EPS = 0.3
# Ours may not be meaningfully weaker than the authors' code: at most 2 points more accuracy left on 200 images.
TOLERANCE = 0.02


def _reference_targeted(model, n_iter, n_targets):
    attack = APGDAttack_targeted(model, n_iter=n_iter, n_restarts=1, eps=EPS, seed=0, device="cpu")
    attack.n_target_classes = n_targets
    return attack


PAIRS = {
    "APGD-CE": (
        lambda: APGD(EPS, steps=20, loss="ce"),
        lambda m: APGDAttack(m, n_iter=20, n_restarts=1, eps=EPS, loss="ce", seed=0, device="cpu"),
    ),
    "APGD-T": (lambda: APGDT(EPS, steps=20, n_targets=3), lambda m: _reference_targeted(m, 20, 3)),
    "Square": (
        lambda: Square(EPS, max_queries=200, p_init=0.8),
        lambda m: SquareAttack(
            m, p_init=0.8, n_queries=200, eps=EPS, norm="Linf", n_restarts=1, seed=0, device="cpu", resc_schedule=False
        ),
    ),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_ours_is_not_weaker_than_the_reference(robust_model, mnist5k_test, name):
    """Same model, inputs, radius and budget (steps, targets, queries); the reference's own seeds."""
    x, y = mnist5k_test.x[:200], mnist5k_test.y[:200]
    make_ours, make_reference = PAIRS[name]
    with torch.random.fork_rng(devices=[]):
        theirs = accuracy(robust_model, make_reference(robust_model).perturb(x, y), y)
    ours = accuracy(robust_model, make_ours()(robust_model, x, y), y)
    assert 0.1 < theirs < accuracy(robust_model, x, y), "the model is robust enough for the comparison to mean something"
    assert ours <= theirs + TOLERANCE, f"{name}: ours leaves {ours:.3f}, the reference {theirs:.3f}"


@pytest.fixture(scope="module")
def batch(mnist5k_test):
    return mnist5k_test.x[:8], mnist5k_test.y[:8]


def test_wrapper_keeps_the_threat_model_the_seed_and_the_global_rng(standard_model, batch):
    x, y = batch
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    attack = create_attack(
        "autoattack", eps=0.3, seed=3
    )  # breaks every sample in APGD-CE: seconds, not FAB's and Square's minutes
    a = attack(standard_model, x, y)
    after = torch.rand(1)
    b = ReferenceAutoAttack(0.3, seed=3)(standard_model, x, y)
    assert torch.equal(before, after), "the reference reseeds the global RNG; the wrapper must shield the caller"
    assert torch.equal(a, b)
    assert (a - x).abs().max() <= 0.3 + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert accuracy(standard_model, a, y) < accuracy(standard_model, x, y)


def test_flags_are_kept_and_the_dynamic_check_does_not_leak(standard_model, batch):
    x, y = batch
    probabilities = nn.Sequential(standard_model, nn.Softmax(dim=1)).eval()
    attack = ReferenceAutoAttack(0.3)
    attack(probabilities, x, y)
    assert "probabilities" in attack.flags
    attack(AdversarialPnml(standard_model, 0.1), x, y)
    assert "dynamic" in attack.flags, "the defense computes input gradients in its forward: the reference flags it"
    attack(standard_model, x, y)
    assert "dynamic" not in attack.flags, "the reference's module-level counter would flag every later model"
    assert flag_key("Square Attack has decreased the robust accuracy of 2.70%.") == "square-after-gradients"


def test_missing_extra_is_one_line_naming_it(monkeypatch):
    real_import = builtins.__import__

    def no_pyautoattack(name, *args, **kwargs):
        if name.startswith("pyautoattack"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "pyautoattack", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_pyautoattack)
    with pytest.raises(ImportError, match=r"pip install 'advpnml\[autoattack\]'"):
        ReferenceAutoAttack(0.3)
    with pytest.raises(ValueError, match="bounds"):
        monkeypatch.setattr(builtins, "__import__", real_import)
        ReferenceAutoAttack(0.3, bounds=(-1.0, 1.0))


def test_reference_subset_runs_only_the_named_attacks(standard_model, mnist5k_test, monkeypatch):
    pyautoattack = pytest.importorskip("pyautoattack")
    with pytest.raises(ValueError, match="non-empty list"):
        create_attack("autoattack", eps=0.3, attacks=["pgd"])

    def not_called(*args, **kwargs):
        raise AssertionError("an attack outside the subset ran")

    for name in ("APGDAttack_targeted", "FABAttack_PT", "SquareAttack"):
        monkeypatch.setattr(getattr(pyautoattack.autoattack, name), "perturb", not_called)
    x, y = mnist5k_test.x[:20], mnist5k_test.y[:20]
    adv = create_attack("autoattack", eps=0.3, attacks=["apgd-ce"])(standard_model, x, y)
    assert (adv - x).abs().amax() <= 0.3 + 1e-6 and accuracy(standard_model, adv, y) < accuracy(standard_model, x, y)
