"""Gradient-masking checks warn on a deliberately masked model and pass a clean one."""

from __future__ import annotations

import torch
import torch.nn as nn

from advpnml.config import AttackSpec, EvalSettings
from advpnml.evaluation.masking import masking_checks
from advpnml.evaluation.records import EvalResult


class Rounding(nn.Module):
    """Quantizes the input to 4 grey levels: the gradient through it is zero almost everywhere."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 3) / 3)


def _status(checks, row, name):
    return next(c.status for c in checks if c.row == row and c.name == name)


def test_masked_model_warns_and_clean_model_passes(standard_model, mnist5k_test):
    x, y = mnist5k_test.x[:40], mnist5k_test.y[:40]
    clean = masking_checks(standard_model, x, y, eps=0.3, steps=10)
    assert _status(clean, "base", "zero input gradients") == "pass"
    assert _status(clean, "base", "accuracy vs eps") == "pass"
    assert _status(clean, "base", "output type") == "pass"
    assert _status(clean, "both", "inputs outside the domain") == "pass"
    masked = masking_checks(Rounding(standard_model).eval(), x, y, eps=0.3, steps=10)
    assert _status(masked, "base", "zero input gradients") == "warn"
    assert _status(masked, "base", "accuracy vs eps") == "warn"


def test_probabilities_instead_of_logits_are_flagged(standard_model, mnist5k_test):
    x, y = mnist5k_test.x[:10], mnist5k_test.y[:10]
    softmaxed = nn.Sequential(standard_model, nn.Softmax(dim=1)).eval()
    assert _status(masking_checks(softmaxed, x, y, eps=0.1, steps=2), "base", "output type") == "warn"


def test_white_box_weaker_than_black_box_is_flagged():
    specs = [AttackSpec("PGD", "pgd", base=True, defense="direct"), AttackSpec("HSJA", "hsja", base=True, defense="direct")]
    settings = EvalSettings("mnist5k", "test", 4, 0.3, 0.1, specs)
    records = [
        {
            "index": i,
            "label": 1,
            "pred": {"base": {"Natural": 1, "PGD": 1, "HSJA": 0}, "defense": {"Natural": 1, "PGD": 1, "HSJA": 1}},
            "queries": {},
        }
        for i in range(4)
    ]
    from advpnml.evaluation.masking import _attack_order_checks

    assert _attack_order_checks(EvalResult(settings, records, {}), "base")[0].status == "warn"
    assert _attack_order_checks(EvalResult(settings, records, {}), "defense")[0].status == "pass"


def test_a_genuinely_robust_cifar10_model_passes_accuracy_vs_eps(shared_data):
    """ResNet-4B, PGD-trained at 2/255, keeps ~20% at 4 x eps: that is robustness, not masking. The check attacks at the
    box's half-width too, where every image can be moved onto the same one, and compares with the largest class."""
    import advpnml
    from advpnml.evaluation.masking import reachable_ceiling

    path = shared_data / "weights" / "abcrown_cifar10_resnet4b" / "resnet4b.pth"
    if not path.is_file():
        import pytest

        pytest.skip("no ResNet-4B checkpoint in the shared folder")
    model = advpnml.load_external(path, "abcrown_resnet4b")
    data = advpnml.load_dataset("cifar10", "test", shared_data / "cifar10", n=30)
    checks = masking_checks(model, data.x, data.y, eps=2 / 255, steps=10)
    check = next(c for c in checks if c.name == "accuracy vs eps")
    assert check.status == "pass" and "at eps 0.5, where at most" in check.detail, check.detail
    assert reachable_ceiling(torch.tensor([0, 0, 1, 2])) == 0.5
