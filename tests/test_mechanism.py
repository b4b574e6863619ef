"""`advpnml reproduce mechanism`: the refinement's statistics against a hand-written refinement, the outcome and the
rules on points whose answer is known, and the command end to end at a tiny budget."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advpnml.cli import main
from advpnml.defense import AdversarialPnml
from advpnml.experiments.mechanism import RULES, collect, outcome, predict, refinement_statistics
from advpnml.models import save_checkpoint


def _own_step_probabilities(model: nn.Module, x: torch.Tensor, lam: float) -> torch.Tensor:
    """p_j(x_j) for every label j, one targeted FGSM step each (eq. 9), written independently of the defense."""
    columns = []
    for j in range(model(x[:1]).shape[1]):
        xj = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xj), torch.full((len(x),), j), reduction="sum")
        (grad,) = torch.autograd.grad(loss, xj)
        refined = (x - lam * grad.sign()).clamp(0, 1)
        with torch.no_grad():
            columns.append(F.softmax(model(refined), 1)[:, j])
    return torch.stack(columns, 1)


def test_refinement_statistics_match_a_hand_written_refinement():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4)).eval()
    x, y = torch.rand(9, 1, 3, 4), torch.randint(0, 4, (9,))
    stats = refinement_statistics(model, AdversarialPnml(model, refine_eps=0.2, bounds=(0.0, 1.0)), x, y)
    own = _own_step_probabilities(model, x, 0.2)
    with torch.no_grad():
        before = F.softmax(model(x), 1)
    rows = torch.arange(9)
    assert stats["true_gain"] == pytest.approx((own[rows, y] - before[rows, y]).tolist(), abs=1e-5)
    wrong = own.clone()
    wrong[rows, y] = -1
    best = wrong.argmax(1)
    assert stats["wrong_gain"] == pytest.approx((own[rows, best] - before[rows, best]).tolist(), abs=1e-5)
    assert stats["true_lowered"] == pytest.approx(((own - before)[rows, y] < -1e-6).float().mean().item())
    assert stats["saturated"] == pytest.approx((before.max(1).values > 0.99).float().mean().item())
    assert stats["base_correct"] == pytest.approx((before.argmax(1) == y).float().mean().item())


def _point(
    base: float,
    wider: float,
    defense: float,
    n: int = 100,
    saturated: float = 0.9,
    wrong_gain: float = 0.3,
    true_gain: float = 0.1,
) -> dict:
    clean = {"saturated": saturated, "mean_true_gain": true_gain, "mean_wrong_gain": wrong_gain}
    clean["top_probability_median"] = 0.5 + saturated / 2
    return {
        "samples": n,
        "lambda": 0.1,
        "eps": 0.3,
        "base_at_eps": base,
        "base_at_eps_plus_lambda": wider,
        "defense_worst": defense,
        "defense_minus_base": defense - base,
        "refinement": {"clean": clean},
    }


def test_outcome_counts_samples_with_a_tolerance_of_two_points_or_one_sample():
    assert outcome(_point(0.50, 0.4, 0.53)) == "raises"
    assert outcome(_point(0.50, 0.4, 0.52)) == "keeps"
    assert outcome(_point(0.50, 0.4, 0.48)) == "keeps"
    assert outcome(_point(0.50, 0.4, 0.47)) == "lowers"
    assert outcome(_point(0.5, 0.4, 0.4, n=10)) == "keeps"  # one sample of ten is within the tolerance
    assert outcome(_point(0.5, 0.4, 0.3, n=10)) == "lowers"


def test_every_rule_answers_an_outcome_and_predict_is_the_chosen_rule():
    lost, kept = _point(0.9, 0.01, 0.05), _point(0.6, 0.59, 0.6, wrong_gain=0.1, true_gain=0.1)
    for name, (_, rule) in RULES.items():
        assert rule(lost) in ("raises", "keeps", "lowers"), name
        assert rule(kept) == "keeps", name
    assert predict(lost) == "lowers" and predict(kept) == "keeps"
    assert predict(_point(0.9, 0.01, 0.05, saturated=0.2)) == "keeps"  # an unconfident model keeps (ResNet-4B)


def test_collect_lists_every_point_and_the_misses(tmp_path):
    even = {"wrong_gain": 0.1, "true_gain": 0.1}
    points = [_point(0.9, 0.01, 0.05), _point(0.6, 0.59, 0.6, **even), _point(0.6, 0.59, 0.3, **even)]
    paths = []
    for i, p in enumerate(points):
        path = tmp_path / f"model{i}" / "mechanism.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"model": "runs/model.pt", "dataset": "mnist", "points": [p]}))
        paths.append(path)
    text = collect(paths, tmp_path / "rule").read_text()
    assert text.count("| model |") == 1 and all(f"model{i}" in text for i in range(3))
    assert "predicts 2 of 3 points" in text and "model2 at lambda 0.1 (lowers, predicted keeps)" in text
    assert (tmp_path / "rule" / "rule.png").is_file() and (tmp_path / "rule" / "rule.pdf").is_file()
    saved = json.loads((tmp_path / "rule" / "rule.json").read_text())
    assert [p["outcome"] for p in saved["points"]] == ["lowers", "keeps", "lowers"]
    assert set(saved["rules"]) == set(RULES)


def test_reproduce_mechanism_writes_table_figures_and_verdict(standard_model, tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "model.pt", standard_model, dataset="mnist5k")
    small = ["--set", "APGD-T.steps=5", "--set", "APGD-T.n_targets=2", "--set", "APGD-CE adaptive.steps=5"]
    small += ["--set", "APGD-T adaptive.steps=5", "--set", "APGD-T adaptive.n_targets=2", "--set", "Adaptive-margin.steps=5"]
    small += ["--set", "Adaptive-margin.restarts=1", "--set", "Adaptive-margin 2nd-order.steps=5"]
    out = tmp_path / "mech"
    args = [
        "reproduce",
        "mechanism",
        "--checkpoint",
        str(checkpoint),
        "--config",
        "mnist5k",
        "--samples",
        "4",
        "--probe-steps",
        "5",
    ]
    main([*args, "--lams", "0.05,0.2", "--eps", "0.1", *small, "--out", str(out)])
    summary = json.loads((out / "mechanism.json").read_text())
    assert [p["lambda"] for p in summary["points"]] == [0.05, 0.2] and summary["samples"] == 4
    for p in summary["points"]:
        assert p["outcome"] in ("raises", "keeps", "lowers") and p["predicted"] in ("raises", "keeps", "lowers")
        assert 0 <= p["defense_worst"] <= 1 and p["base_at_eps_plus_lambda"] <= p["base_at_eps"] + 1e-9
        assert set(p["refinement"]) == {"clean", "transfer", "adaptive"}
        assert (out / f"lam={p['lambda']:g}" / "records.jsonl").is_file()
    for name in ("mechanism.md", "mechanism.csv", "gains.png", "gains.pdf", "worst_case.png", "worst_case.pdf"):
        assert (out / name).is_file(), name
    assert "Verdict: the defense" in (out / "mechanism.md").read_text()
    main([*args, "--lams", "0.05,0.2", "--eps", "0.1", *small, "--out", str(out)])  # resumes, same answer
    assert json.loads((out / "mechanism.json").read_text())["points"][0]["defense_worst"] == summary["points"][0]["defense_worst"]
    capsys.readouterr()
    main(["reproduce", "mechanism", "--collect", str(out / "mechanism.json"), "--out", str(tmp_path / "rule")])
    assert "The chosen rule (" in capsys.readouterr().out
