"""The evaluation harness: per-sample worst case, reports, and resuming a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from advpnml.config import AttackSpec, EvalSettings
from advpnml.evaluation.engine import evaluate
from advpnml.evaluation.records import SKIPPED, EvalResult
from advpnml.evaluation.reporting import markdown_table, write_report
from advpnml.models import save_checkpoint
from advpnml.runtime import QUIET

from .conftest import REPO, write_eval_config

SPECS = [
    AttackSpec("FGSM", "fgsm", {}, base=True, defense="transfer"),
    AttackSpec("PGD", "pgd", {"steps": 3, "step_size": 0.05}, base=True, defense="transfer"),
    AttackSpec("Adaptive", "pgd", {"steps": 2, "step_size": 0.05, "loss": "margin"}, base=False, defense="direct"),
]


def _settings(n=12, **kw):
    values = dict(dataset="mnist5k", split="test", n=n, eps=0.1, refine_eps=0.1, attacks=SPECS, batch_size=4, seed=0)
    values.update(kw)
    return EvalSettings(**values)


def test_best_attack_is_the_per_sample_worst_case():
    """Two attacks that each fool a different sample: columns say 50%, the worst case says 0%."""
    settings = _settings(n=2, refine_eps=None, attacks=[AttackSpec("A", "fgsm"), AttackSpec("B", "fgsm")])
    records = [
        {"index": 0, "label": 1, "pred": {"base": {"Natural": 1, "A": 0, "B": 1}}, "queries": {}},
        {"index": 1, "label": 2, "pred": {"base": {"Natural": 2, "A": 2, "B": 0}}, "queries": {}},
    ]
    result = EvalResult(settings, records, {})
    acc = result.accuracy()["base"]
    assert (acc["A"], acc["B"], acc["Best attack"]) == (0.5, 0.5, 0.0)
    assert result.worst_attack("base") == ["A", "B"]


def test_evaluate_writes_records_and_reports(standard_model, mnist5k_test, tmp_path):
    data = mnist5k_test.head(12)
    result = evaluate(standard_model, data, _settings(), tmp_path, runtime=QUIET)
    assert [r["index"] for r in result.records] == list(range(12))
    table = result.accuracy()
    assert set(table) == {"base", "defense"}
    assert table["base"]["Adaptive"] is None and table["defense"]["Adaptive"] is not None
    for row in table.values():
        assert row["Best attack"] <= min(v for v in row.values() if v is not None) + 1e-9
    assert table["base"]["PGD"] < table["base"]["Natural"]
    paths = write_report(result, tmp_path)
    assert "| Adversarial pNML |" in paths["md"].read_text()
    summary = json.loads(paths["json"].read_text())
    assert summary["samples"] == 12 and summary["environment"]["torch"] == torch.__version__
    assert "Best attack" in paths["csv"].read_text().splitlines()[0]
    assert "Best attack" in markdown_table(result)


def test_resume_refuses_other_settings(standard_model, mnist5k_test, tmp_path):
    data = mnist5k_test.head(4)
    evaluate(standard_model, data, _settings(n=4), tmp_path, runtime=QUIET)
    with pytest.raises(ValueError, match="other settings"):
        evaluate(standard_model, data, _settings(n=4, eps=0.2), tmp_path, runtime=QUIET)


def test_a_killed_run_resumes_with_no_sample_lost_or_counted_twice(standard_model, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "model.pt", standard_model, dataset="mnist5k")
    config = write_eval_config(tmp_path / "eval.toml", pgd=(10, 0.02), adaptive=(10, 0.02))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "advpnml",
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--config",
        str(config),
        "--n",
        "16",
        "--checks",
        "0",
    ]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = killed / "records.jsonl"
    while proc.poll() is None and (not records.exists() or len(records.read_text().splitlines()) < 5):
        time.sleep(0.05)  # until some records are written (or the run ended, which the assert below catches)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines_at_kill = len(records.read_text().splitlines()) - 1
    assert 0 < lines_at_kill < 16, "the run was killed part-way"
    with open(records, "a") as f:
        f.write('{"index": 99, "lab')  # a record cut short by the kill
    subprocess.run(args + ["--out", str(killed)], env=env, check=True, capture_output=True)
    subprocess.run(args + ["--out", str(tmp_path / "whole")], env=env, check=True, capture_output=True)
    resumed = [json.loads(line) for line in records.read_text().splitlines()[1:]]
    whole = [json.loads(line) for line in (tmp_path / "whole" / "records.jsonl").read_text().splitlines()[1:]]
    assert sorted(r["index"] for r in resumed) == list(range(16))
    assert sorted(resumed, key=lambda r: r["index"]) == whole
    assert (
        json.loads((killed / "results.json").read_text())["accuracy"]
        == json.loads((tmp_path / "whole" / "results.json").read_text())["accuracy"]
    )


DETERMINISTIC = [
    AttackSpec("FGSM", "fgsm", {}, base=True, defense="transfer"),
    AttackSpec("PGD", "pgd", {"steps": 3, "step_size": 0.05, "random_start": False}, base=True, defense="transfer"),
    AttackSpec(
        "Adaptive", "pgd", {"steps": 3, "step_size": 0.05, "random_start": False, "loss": "margin"}, base=False, defense="direct"
    ),
]


def test_cascade_gives_the_same_worst_case_for_less_work(standard_model, mnist5k_test):
    """With attacks whose result for a sample does not depend on the rest of its batch, the cascade's
    per-sample worst case is exactly the full evaluation's; it attacks fewer samples, and columns are cumulative."""
    data = mnist5k_test.head(24)
    full = evaluate(standard_model, data, _settings(n=24, eps=0.1, attacks=DETERMINISTIC, batch_size=8), runtime=QUIET)
    cascade = evaluate(
        standard_model, data, _settings(n=24, eps=0.1, attacks=DETERMINISTIC, batch_size=8, cascade=True), runtime=QUIET
    )
    for row in ("base", "defense"):
        assert torch.equal(full.robust(row), cascade.robust(row)), row
        accs = [a for a in cascade.accuracy()[row].values() if a is not None]
        assert accs == sorted(accs, reverse=True), f"{row}: a cascade's columns can only fall: {accs}"
    skipped = sum(p == SKIPPED for r in cascade.records for cols in r["pred"].values() for p in cols.values())
    assert skipped > 0, "samples already broken are not attacked again"
    assert cascade.accuracy()["defense"]["Adaptive"] == cascade.accuracy()["defense"]["Best attack"]


def test_cascade_changes_the_digest_and_old_runs_keep_theirs():
    assert _settings().digest() != _settings(cascade=True).digest()
    stored = REPO / "results" / "gpu_h200" / "advertorch_lenet5" / "records.jsonl"
    if not stored.exists():
        pytest.skip("no stored run")
    header = json.loads(stored.read_text().splitlines()[0])
    settings = dict(header["settings"])
    settings["attacks"] = [AttackSpec(**a) for a in settings["attacks"]]
    assert EvalSettings(**settings).digest() == header["digest"], "a run stored before the cascade option must still resume"


def test_the_progress_bar_names_the_attack_and_how_far_it_is(standard_model, mnist5k_test, monkeypatch):
    import advpnml.evaluation.engine as engine

    shown: list[str] = []
    monkeypatch.setattr(engine, "_describe", lambda bar, first, key: shown.append(key))
    evaluate(standard_model, mnist5k_test.head(4), _settings(n=4), runtime=QUIET)
    assert "defense/Adaptive: step 0/2" in shown and "base/PGD: step 0/3" in shown, shown
