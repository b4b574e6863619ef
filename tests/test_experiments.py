"""Each experiment runs at tiny scale and writes well-formed tables and figures."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from advpnml.cli import main
from advpnml.config import AttackSpec, EvalSettings, attack_specs, load_config
from advpnml.experiments.adaptive_training import run_adaptive_training
from advpnml.experiments.sweeps import parse_steps, point_settings, run_sweep
from advpnml.experiments.toy import run_toy
from advpnml.models import save_checkpoint
from advpnml.runtime import QUIET


def test_toy_writes_table_figure_and_mechanisms(tmp_path):
    summary = run_toy(tmp_path, overrides=["evaluation.n=200", "training.epochs=4"], runtime=QUIET)
    assert (tmp_path / "toy_mechanisms.png").is_file() and (tmp_path / "toy_mechanisms.pdf").is_file()
    assert set(summary["accuracy"]) == {"base", "defense"} and summary["accuracy"]["base"]["Natural"] > 0.9
    saved = json.loads((tmp_path / "toy.json").read_text())
    for m in saved["mechanisms"].values():
        assert len(m["x_adv"]) == 2 and m["defense_rescues"] in (True, False)
    assert "| Adversarial pNML |" in (tmp_path / "eval" / "results.md").read_text()


def test_sweep_points_and_outputs(standard_model, mnist5k_test, tmp_path):
    base = EvalSettings("mnist5k", "test", 6, 0.1, 0.1, [AttackSpec("FGSM", "fgsm", base=True, defense="transfer")], batch_size=6)
    assert parse_steps("4x0.01") == (4, 0.01)
    steps = point_settings(base, "steps", "2x0.015")
    assert steps.refine_steps == 2 and steps.refine_eps == pytest.approx(0.03)
    assert point_settings(base, "k", 3).top_k == 3 and point_settings(base, "lam", 0.2).refine_eps == 0.2
    pgd = replace(base, attacks=[AttackSpec("PGD", "pgd", {"steps": 10, "step_size": 0.01})])
    wide = point_settings(pgd, "eps", 0.4)
    assert wide.eps == 0.4 and wide.attacks[0].params == {"steps": 10, "step_size": pytest.approx(0.04)}
    assert pgd.attacks[0].params["step_size"] == 0.01  # the reference settings are not modified
    with pytest.raises(ValueError, match="STEPSxSIZE"):
        parse_steps("three")
    rows = run_sweep(standard_model, mnist5k_test.head(6), base, "eps", [0.05, 0.3], tmp_path, QUIET, reference=0.1)
    assert [r["value"] for r in rows] == [0.05, 0.3]
    assert rows[1]["base/FGSM"] <= rows[0]["base/FGSM"]
    for suffix in (".md", ".csv", ".json", ".png", ".pdf"):
        assert (tmp_path / f"sweep_eps{suffix}").is_file()


def test_adaptive_training_compares_two_models_over_lambda(standard_model, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "pgd.pt", standard_model, dataset="mnist5k")
    rows = run_adaptive_training(
        tmp_path / "out",
        str(checkpoint),
        refine_eps_values=(0.1, 0.2),
        finetune_epochs=1,
        finetune_steps=1,
        train_samples=50,
        n=4,
        runtime=QUIET,
    )
    assert [(r["model"], r["lam"]) for r in rows] == [
        ("PGD-trained", 0.1),
        ("PGD-trained", 0.2),
        ("+ adaptive fine-tuning", 0.1),
        ("+ adaptive fine-tuning", 0.2),
    ]
    assert all(r["defense best"] <= r["defense Adaptive"] for r in rows)
    assert (tmp_path / "out" / "adaptive_training.png").is_file() and (tmp_path / "out" / "adaptive_training.md").is_file()


def test_strong_suite_report_has_croce_layout_and_masking_checks(standard_model, tmp_path, capsys):
    for preset in ("mnist", "cifar10", "imagenet", "mnist5k"):  # APGD-T decides the worst case: every preset runs it
        config = load_config(preset)
        paper = [s.column for s in attack_specs(config)]
        assert {"APGD-T", "APGD-T adaptive"} <= set(paper) and paper[-1] == "HSJA", preset
        strong = {s.column: s for s in attack_specs(config, suite="strong")}
        assert set(strong) - set(paper) == {
            "APGD-CE",
            "APGD-CE adaptive",
            "Adaptive-margin exact-clip",
            "APGD-CE exact-clip",
            "Joint hypotheses",
            "Square",
            "Adaptive-margin 2nd-order",
            "APGD-CE 2nd-order",
            "APGD-T 2nd-order",
            "APGD-T shortened",  # run only on a defense with steps to shorten (Hedge), never on the pNML
        }, preset
        second = [strong[c] for c in strong if c.endswith("2nd-order")]
        assert all(s.params["backward"] == "second-order-tanh" and s.params["clip"] == "exact" and not s.base for s in second)
        assert strong["APGD-CE exact-clip"].params["clip"] == "exact" == strong["Adaptive-margin exact-clip"].params["clip"]
        reference = attack_specs(config, suite="autoattack")[-1]
        assert (reference.column, reference.attack, reference.base, reference.defense) == (
            "AutoAttack",
            "autoattack",
            True,
            "direct",
        )
    with pytest.raises(ValueError, match="needs the config's"):
        attack_specs(load_config("toy2d"), suite="autoattack")
    named = attack_specs(load_config("mnist"), ["square", "APGD-T adaptive"], suite="strong")
    assert [s.column for s in named] == ["Square", "APGD-T adaptive"], "a cascade runs the columns in the order named"
    checkpoint = save_checkpoint(tmp_path / "m.pt", standard_model, dataset="mnist5k")
    small = [
        "PGD.steps=2",
        "PGD.restarts=1",
        "Adaptive.steps=2",
        "Adaptive-margin.steps=2",
        "HSJA.max_queries=20",
        "APGD-CE.steps=2",
        "APGD-T.steps=2",
        "APGD-T.n_targets=1",
        "APGD-CE adaptive.steps=2",
        "APGD-T adaptive.steps=2",
        "APGD-T adaptive.n_targets=1",
        "Joint hypotheses.steps=2",
        "Square.max_queries=5",
        "Adaptive-margin 2nd-order.steps=2",
        "APGD-CE 2nd-order.steps=2",
        "APGD-T 2nd-order.steps=2",
        "APGD-T 2nd-order.n_targets=1",
        "Adaptive-margin exact-clip.steps=2",
        "APGD-CE exact-clip.steps=2",
    ]
    args = [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--samples",
        "4",
        "--suite",
        "strong",
        "--checks",
        "4",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "eval"),
    ]
    for override in small:
        args += ["--set", override]
    assert main(args) == 0
    report = (tmp_path / "eval" / "results.md").read_text()
    assert "Summary (Croce et al. 2022 layout)" in report and "Gradient-masking checks" in report
    assert (
        "| Adaptive-margin 2nd-order | APGD-CE 2nd-order | APGD-T 2nd-order | Square | HSJA | Best attack |"
        in (report.splitlines()[2])
    )
    summary = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(summary["summary"]["defense"]) >= {"clean", "transfer", "adaptive", "black-box", "worst case"}
    assert summary["masking_checks"] and (tmp_path / "eval" / "results.png").is_file()
    assert "Worst case, defense minus base" in capsys.readouterr().out


def test_table1_and_detect_commands(standard_model, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "m.pt", standard_model, dataset="mnist5k")
    assert (
        main(
            [
                "reproduce",
                "table1",
                "--dataset",
                "mnist5k",
                "--checkpoint",
                str(checkpoint),
                "--samples",
                "4",
                "--attacks",
                "FGSM",
                "--checks",
                "0",
                "--device",
                "cpu",
                "--memory-format",
                "contiguous",
                "--out",
                str(tmp_path / "t1"),
            ]
        )
        == 0
    )
    assert (tmp_path / "t1" / "results.md").is_file()
    assert (
        main(
            [
                "detect",
                "--checkpoint",
                str(checkpoint),
                "--samples",
                "6",
                "--steps",
                "2",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "det"),
            ]
        )
        == 0
    )
    assert (tmp_path / "det" / "detect_roc.png").is_file()


def test_demo_reuses_its_model_and_reports_the_strong_columns(standard_model, tmp_path, capsys):
    save_checkpoint(tmp_path / "model" / "model.pt", standard_model, dataset="mnist5k")
    assert main(["demo", "--out", str(tmp_path), "--samples", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "reusing" in out and "finished in" in out
    table = (tmp_path / "eval" / "results.md").read_text()
    assert (
        "| Model | Natural | FGSM | PGD | APGD-T | APGD-T adaptive | Adaptive | Adaptive-margin | HSJA | Best attack |" in table
    )
    assert (tmp_path / "eval" / "results.png").is_file()


def test_autoattack_suite_records_the_reference_beside_ours(standard_model, tmp_path):
    pytest.importorskip("pyautoattack")
    checkpoint = save_checkpoint(tmp_path / "m.pt", standard_model, dataset="mnist5k")
    args = [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--samples",
        "4",
        "--suite",
        "autoattack",
        "--cascade",
        "--checks",
        "4",
        "--device",
        "cpu",
        "--attacks",
        "APGD-T adaptive,AutoAttack",
        "--set",
        "APGD-T adaptive.steps=2",
        "--set",
        "APGD-T adaptive.n_targets=1",
        "--out",
        str(tmp_path / "eval"),
    ]
    assert main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "eval" / "records.jsonl").read_text().splitlines()[1:]]
    assert all("AutoAttack" in r["pred"]["base"] and "AutoAttack" in r["pred"]["defense"] for r in records)
    assert all("dynamic" in r["flags"]["defense/AutoAttack"] for r in records)
    report = (tmp_path / "eval" / "results.md").read_text()
    assert "## Our attacks vs the reference AutoAttack" in report and "AutoAttack flag: dynamic" in report
    assert "Cascade (AutoAttack's protocol)" in report
    summary = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert summary["reference_comparison"]["defense"]["both"] <= summary["reference_comparison"]["defense"]["ours"]


def test_sweep_rows_separate_the_papers_attacks_from_the_strong_worst_case(standard_model, mnist5k_test, tmp_path):
    attacks = [
        AttackSpec("FGSM", "fgsm", base=True, defense="transfer"),
        AttackSpec("APGD-CE adaptive", "apgd", {"steps": 5, "loss": "ce"}, base=False, defense="direct"),
    ]
    base = EvalSettings("mnist5k", "test", 8, 0.3, 0.1, attacks, batch_size=8)
    rows = run_sweep(standard_model, mnist5k_test.head(8), base, "eps", [0.2, 0.3], tmp_path, QUIET, paper_columns=["FGSM"])
    for row in rows:
        assert row["defense/Paper attacks"] == row["defense/FGSM"], "the paper's worst case uses its attacks only"
        assert row["defense/Best attack"] <= row["defense/Paper attacks"]
    assert "Paper attacks" in (tmp_path / "sweep_eps.md").read_text()
