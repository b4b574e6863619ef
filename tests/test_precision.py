"""bf16 autocast: fp32 logits, an fp32 run never resumes a bf16 one, and the agreement measure is exact where it must be."""

from __future__ import annotations

import pytest
import torch

from advpnml.accel.precision import Autocast, agreement, with_precision
from advpnml.attacks import PGD
from advpnml.config import AttackSpec, EvalSettings
from advpnml.defense import AdversarialPnml
from advpnml.evaluation.engine import evaluate
from advpnml.evaluation.records import RunMismatchError
from advpnml.runtime import QUIET, Runtime


def test_autocast_returns_fp32_logits_near_the_fp32_ones(standard_model, mnist5k_test):
    x = mnist5k_test.x[:16]
    low = with_precision(standard_model, "bf16")
    assert isinstance(low, Autocast) and with_precision(standard_model, "fp32") is standard_model
    with torch.no_grad():
        full, reduced = standard_model(x), low(x)
    assert reduced.dtype == torch.float32
    assert not torch.equal(full, reduced), "bf16 must actually run"
    assert (full - reduced).abs().max() < 0.05 * full.abs().max()


def test_a_bad_precision_is_one_line():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'fp16'"):
        Runtime(precision="fp16")


def test_agreement_of_fp32_with_itself_is_total_and_bf16_is_measured(standard_model, mnist5k_test):
    x, y = mnist5k_test.x[:12], mnist5k_test.y[:12]
    attacks = {"PGD": PGD(0.1, 3, 0.05, seed=0)}
    targets = lambda m: {"base": m, "defense": AdversarialPnml(m, 0.1, check_inputs=False)}  # noqa: E731
    same = agreement(standard_model, targets, x, y, attacks, precision="fp32", batch_size=5)
    for row in same.values():
        assert row["predictions"] == row["outcome PGD"] == 1.0 and row["fp32 PGD"] == row["fp32 PGD"]
    bf16 = agreement(standard_model, targets, x, y, attacks, precision="bf16", batch_size=5)
    assert set(bf16) == {"base", "defense"} and set(bf16["base"]) == {
        "samples",
        "predictions",
        "outcome PGD",
        "fp32 PGD",
        "bf16 PGD",
    }
    assert bf16["base"]["fp32 PGD"] == same["base"]["fp32 PGD"]
    assert all(0.0 <= v <= 1.0 for row in bf16.values() for k, v in row.items() if k != "samples")


def test_an_fp32_run_never_resumes_a_bf16_one_and_bf16_never_evaluates_the_defense(standard_model, mnist5k_test, tmp_path):
    fgsm = [AttackSpec("FGSM", "fgsm", {}, base=True, defense="transfer")]
    with pytest.raises(ValueError, match="evaluates the base model only"):
        evaluate(
            standard_model,
            mnist5k_test.head(2),
            EvalSettings("mnist5k", "test", 2, 0.1, 0.1, fgsm, batch_size=2),
            None,
            Runtime(log=QUIET.log, progress=False, precision="bf16"),
        )
    settings = EvalSettings("mnist5k", "test", 4, 0.1, None, fgsm, batch_size=2)
    data = mnist5k_test.head(4)
    evaluate(standard_model, data, settings, tmp_path, Runtime(log=QUIET.log, progress=False, precision="bf16"))
    with pytest.raises(RunMismatchError, match=r"the precision \(bf16 -> fp32\)"):
        evaluate(standard_model, data, settings, tmp_path, QUIET)
    assert (
        len(evaluate(standard_model, data, settings, tmp_path, Runtime(log=QUIET.log, progress=False, precision="bf16")).records)
        == 4
    )


def test_the_command_line_refuses_a_bf16_defense_in_one_line(standard_model, tmp_path, capsys):
    from advpnml.cli import main
    from advpnml.models import save_checkpoint

    checkpoint = save_checkpoint(tmp_path / "m.pt", standard_model, dataset="mnist5k")
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(checkpoint),
                "--samples",
                "2",
                "--precision",
                "bf16",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--precision bf16 evaluates the base model only (add --no-defense)" in err
