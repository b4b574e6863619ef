"""The command line: help for each command, info, predict, and one-line errors."""

from __future__ import annotations

import pytest

from advpnml.cli import main
from advpnml.models import save_checkpoint


@pytest.mark.parametrize("command", ["info", "predict", "train", "evaluate", "demo"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "usage: advpnml" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"], ["-h"]])
def test_top_level_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "usage: advpnml" in out and "detect" in out


def test_autoattack_suite_without_the_extra_is_one_line_before_any_work(standard_model, tmp_path, monkeypatch, capsys):
    import builtins
    import sys

    real_import = builtins.__import__

    def no_pyautoattack(name, *args, **kwargs):
        if name.startswith("pyautoattack"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    checkpoint = save_checkpoint(tmp_path / "m.pt", standard_model, dataset="mnist5k")
    monkeypatch.delitem(sys.modules, "pyautoattack", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_pyautoattack)
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--samples", "2", "--suite", "autoattack", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'advpnml[autoattack]'" in err
    assert not out.exists(), "refused before any evaluation started"


def test_info_lists_datasets(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "mnist5k   found (1000 test samples)" in out and "madry_cnn" in out


def test_predict_prints_base_and_defended_accuracy(standard_model, tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "m.pt", standard_model, dataset="mnist5k")
    assert main(["predict", "--checkpoint", str(checkpoint), "--n", "50", "--lam", "0.1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "base model accuracy:" in out and "Adversarial pNML accuracy:" in out and "50 samples" in out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["predict", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "checkpoint file not found" in err
    assert main(["evaluate", "--checkpoint", "x.pt", "--config", "nope"]) == 2
    assert "unknown config 'nope'" in capsys.readouterr().err


def test_wrong_dataset_and_bad_settings_are_one_line_before_any_work(standard_model, tmp_path, capsys):
    import pickle

    import numpy as np

    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    with open(batches / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, 1]}, f)
    checkpoint = save_checkpoint(tmp_path / "m.pt", standard_model, dataset="mnist5k")
    out = tmp_path / "eval"
    assert (
        main(["evaluate", "--checkpoint", str(checkpoint), "--data", "cifar10", "--data-dir", str(tmp_path), "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not take cifar10 inputs of shape (3, 32, 32)" in err and "'mnist5k'" in err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--eps", "-0.1"]) == 2
    assert "eps (--eps) must be a finite number >= 0" in capsys.readouterr().err, "settings are checked before the model loads"
    assert not out.exists()


def test_ctrl_c_says_truthfully_what_was_saved(monkeypatch, capsys):
    import advpnml.cli.evaluate as evaluate_command
    import advpnml.cli.tools as tools_command

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tools_command, "describe", interrupted)
    assert main(["info"]) == 130
    assert "interrupted; nothing was saved" in capsys.readouterr().err
    monkeypatch.setattr(evaluate_command, "load_run", interrupted)
    assert main(["evaluate", "--checkpoint", "x.pt"]) == 130
    assert "every finished batch" in capsys.readouterr().err


def test_predict_with_a_model_that_cannot_take_the_data_is_one_line(standard_model, tmp_path, cifar10_dir, capsys):
    checkpoint = save_checkpoint(tmp_path / "m.pt", standard_model, dataset="mnist5k")
    assert main(["predict", "--checkpoint", str(checkpoint), "--data", "cifar10", "--data-dir", str(cifar10_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not take cifar10 inputs of shape (3, 32, 32)" in err


def test_a_named_dataset_without_config_takes_its_own_preset(tmp_path, cifar10_dir, capsys):
    from advpnml.jobs import choose_preset

    assert choose_preset(None, "cifar10").eps == 0.031 and choose_preset(None, None).name == "mnist5k"
    assert choose_preset(None, str(tmp_path / "x.npz"), 0.1, 0.05).name == "generic"
    assert choose_preset("mnist", "cifar10").name == "mnist", "--config wins"


def test_evaluate_defaults_to_the_strong_suite_as_the_python_call_and_table1_to_the_papers():
    import inspect

    import advpnml
    from advpnml.cli import build_parser
    from advpnml.config import from_preset, generic_preset

    parser = build_parser()
    assert parser.parse_args(["evaluate"]).suite is None is inspect.signature(advpnml.evaluate).parameters["suite"].default
    for preset in (from_preset("mnist"), from_preset("cifar10"), generic_preset(0.1, 0.1)):
        assert (
            preset.eval_settings("d", "test", 1, suite=None).attacks
            == preset.eval_settings("d", "test", 1, suite="strong").attacks
        )
    assert parser.parse_args(["reproduce", "table1"]).suite == "paper"
    assert parser.parse_args(["reproduce", "sweep", "--param", "eps"]).suite == "paper"
    assert parser.parse_args(["evaluate", "--suite", "paper"]).suite == "paper"
