"""The examples a user copies from run, at tiny budgets (the RobustBench one needs the internet: it must compile)."""

from __future__ import annotations

import json
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(*argv: str, cwd: Path) -> str:
    # no timeout: a busy machine may take many times the idle one's 15 s, and CI's own limit bounds a hang
    done = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_your_model_example_runs_and_its_command_line_gives_the_same_numbers(tmp_path):
    out = _run(str(EXAMPLES / "your_model.py"), "--quick", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert "| Adversarial pNML |" in out and "worst case: base" in out
    command = out.strip().splitlines()[-1].split()
    assert command[:2] == ["advpnml", "evaluate"]
    from advpnml.cli import main

    assert main([*_unquote(command[1:]), "--checks", "4", "--device", "cpu"]) == 0
    python = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    cli = json.loads((tmp_path / "run" / "eval-cli" / "results.json").read_text())
    assert python["accuracy"] == cli["accuracy"] and python["summary"] == cli["summary"]


def _unquote(words: list[str]) -> list[str]:
    """The printed command's words as a shell would pass them (``--set 'Joint hypotheses.steps=3'``)."""
    import shlex

    return shlex.split(" ".join(words))


def test_art_interop_example_runs(tmp_path):
    pytest.importorskip("art", reason="the ART example needs adversarial-robustness-toolbox (the test extra)")
    out = _run(str(EXAMPLES / "art_interop.py"), "--quick", cwd=tmp_path)
    assert "ART's PGD" in out and "predictions equal the defense's: True" in out


def test_robustbench_example_compiles_and_says_it_is_not_run():
    path = EXAMPLES / "robustbench_model.py"
    py_compile.compile(str(path), doraise=True)
    text = path.read_text()
    assert "NOT RUN IN CI" in text and 'load_model("Carmon2019Unlabeled", dataset="cifar10", threat_model="Linf")' in text


def test_your_defense_example_runs_and_flags_the_masked_gradients(tmp_path):
    out = _run(str(EXAMPLES / "your_defense.py"), "--quick", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert "yours: clean" in out and "hedge: clean" in out
    yours = json.loads((tmp_path / "run" / "yours" / "results.json").read_text())
    assert yours["settings"]["defense_name"] == "own: MedianQuantize"
    flagged = {c["name"] for c in yours["masking_checks"] if c["row"] == "defense" and c["status"] == "warn"}
    assert "zero input gradients" in flagged
    hedge = json.loads((tmp_path / "run" / "hedge" / "results.json").read_text())
    assert hedge["settings"]["defense_name"] == "hedge" and hedge["settings"]["defense_params"]["steps"] == 4
