"""The report's verdict line says plainly whether the defense helps, hurts, or was never attacked."""

from __future__ import annotations

from advpnml.config import AttackSpec, EvalSettings
from advpnml.evaluation.records import EvalResult
from advpnml.evaluation.reporting import summary_table


def _result(defense_correct: list[bool], attacks: list[AttackSpec]) -> EvalResult:
    """Four samples of label 0; the base model survives every attack on samples 0-1 only."""
    records = []
    for i, ok in enumerate(defense_correct):
        base = {"Natural": 0, **{s.column: (0 if i < 2 else 1) for s in attacks if s.base}}
        defense = {"Natural": 0, **{s.column: (0 if ok else 1) for s in attacks if s.defense}}
        records.append({"index": i, "label": 0, "pred": {"base": base, "defense": defense}})
    settings = EvalSettings("mnist5k", "test", len(records), 0.3, 0.1, attacks)
    return EvalResult(settings, records, {"base/Natural": 0.01, "defense/Natural": 0.1})


PGD = AttackSpec("PGD", "pgd", base=True, defense="transfer")
ADAPTIVE = AttackSpec("Adaptive", "pgd", base=False, defense="direct")


def test_verdict_says_the_defense_lowers_the_worst_case():
    text = summary_table(_result([True, False, False, False], [PGD, ADAPTIVE]))
    assert "-25.0 points: the defense LOWERS the per-sample worst case" in text


def test_verdict_names_a_gain_and_an_untested_gain():
    assert "+25.0 points: the defense raises the per-sample worst case under these attacks." in summary_table(
        _result([True, True, True, False], [PGD, ADAPTIVE])
    )
    untested = summary_table(_result([True, True, True, False], [PGD]))
    assert "no attack ran through the defense, so this is no evidence of robustness" in untested


def test_verdict_for_no_change():
    assert "does not change the per-sample worst case" in summary_table(_result([True, True, False, False], [PGD, ADAPTIVE]))
