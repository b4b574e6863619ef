"""The regret detector: AUC arithmetic, chance level on identical distributions, and the command's outputs."""

from __future__ import annotations

import json

import pytest
import torch

from advpnml.config import DefenseSpec
from advpnml.experiments.detection import detection_rate, roc_auc, roc_curve, run_detection


def test_auc_is_chance_on_identical_distributions_and_one_when_separated():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3000, generator=gen), torch.randn(3000, generator=gen)
    assert abs(roc_auc(a, b) - 0.5) < 0.03
    assert roc_auc(torch.zeros(5), torch.ones(5)) == 1.0 and roc_auc(torch.ones(5), torch.zeros(5)) == 0.0
    assert roc_auc(torch.ones(4), torch.ones(4)) == 0.5  # ties count one half
    threshold, rate = detection_rate(torch.arange(100.0), torch.full((10,), 200.0))
    assert threshold == pytest.approx(94.05) and rate == 1.0
    fpr, tpr = roc_curve(torch.zeros(3), torch.ones(3))
    assert fpr[0] == 0 and tpr[-1] == 1


def test_detect_writes_table_json_and_roc(standard_model, mnist5k_test, tmp_path):
    x, y = mnist5k_test.x[:12], mnist5k_test.y[:12]
    summary = run_detection(standard_model, x, y, DefenseSpec(0.1), 0.2, tmp_path, steps=3, log=lambda s: None)
    assert [r["attack"] for r in summary["rows"]] == ["PGD (transfer from base)", "Adaptive-margin", "Detector-aware adaptive"]
    assert all(0 <= r["auc_all"] <= 1 for r in summary["rows"])
    assert json.loads((tmp_path / "detect.json").read_text())["samples"] == 12
    assert (tmp_path / "detect_roc.png").is_file() and (tmp_path / "detect_roc.pdf").is_file()
    assert "| Detector-aware adaptive |" in (tmp_path / "detect.md").read_text()
