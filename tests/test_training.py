"""Training methods, resumability, and that adversarial training buys robustness on the toy data."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from advpnml.attacks import PGD
from advpnml.data import load_dataset
from advpnml.models import load_checkpoint
from advpnml.runtime import QUIET
from advpnml.training.trainer import TrainConfig, train

from .conftest import accuracy

TRAIN_QUIET = replace(QUIET, memory_format="contiguous")  # train()'s own default layout


def _toy_config(method: str, **kw) -> TrainConfig:
    values = dict(
        arch="toy_mlp",
        arch_kwargs={"hidden": 32},
        method=method,
        epochs=4,
        batch_size=50,
        optimizer="adam",
        lr=0.01,
        weight_decay=0.0,
        eps=0.5,
        attack_steps=4,
        attack_step_size=0.25,
    )
    values.update(kw)
    return TrainConfig(**values)


def test_each_method_lowers_its_loss(tmp_path):
    data = load_dataset("mnist5k", "train", n=400)
    for method in ("standard", "pgd", "fast"):
        config = TrainConfig(
            arch="madry_cnn",
            arch_kwargs={"width": 0.125},
            method=method,
            epochs=3,
            batch_size=50,
            optimizer="adam",
            lr=2e-3,
            weight_decay=0.0,
            eps=0.1,
            attack_steps=3,
            attack_step_size=0.04,
        )
        _, history = train(config, data, tmp_path / method, runtime=TRAIN_QUIET)
        assert history[-1]["loss"] < history[0]["loss"], method
        assert (tmp_path / method / "metrics.csv").is_file() and (tmp_path / method / "metrics.png").is_file()
        _, meta = load_checkpoint(tmp_path / method / "model.pt")
        assert meta["training"] == method and meta["eps"] == 0.1 and meta["arch"] == "madry_cnn"


def test_resume_equals_an_uninterrupted_run(tmp_path):
    data = load_dataset("mnist5k", "train", n=200)
    config = TrainConfig(
        arch="madry_cnn",
        arch_kwargs={"width": 0.125},
        method="pgd",
        epochs=2,
        batch_size=50,
        lr=0.01,
        eps=0.1,
        attack_steps=2,
        attack_step_size=0.05,
    )
    whole, _ = train(config, data, tmp_path / "whole", runtime=TRAIN_QUIET)
    train(config, data, tmp_path / "parts", runtime=TRAIN_QUIET, stop_after=1)
    assert not (tmp_path / "parts" / "model.pt").exists()
    resumed, history = train(config, data, tmp_path / "parts", resume=True, runtime=TRAIN_QUIET)
    assert len(history) == 2
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_time_limit_stops_between_epochs_and_resume_finishes_the_run(tmp_path):
    data = load_dataset("mnist5k", "train", n=100)
    config = TrainConfig(arch="madry_cnn", arch_kwargs={"width": 0.125}, method="standard", epochs=3, batch_size=50, lr=0.01)
    whole, _ = train(config, data, tmp_path / "whole", runtime=TRAIN_QUIET)
    # A limit shorter than any epoch: the first epoch always runs, the second would end past the limit.
    _, history = train(config, data, tmp_path / "parts", runtime=TRAIN_QUIET, time_limit=1e-9)
    assert len(history) == 1 and not (tmp_path / "parts" / "model.pt").exists()
    resumed, history = train(config, data, tmp_path / "parts", resume=True, runtime=TRAIN_QUIET)
    assert len(history) == 3
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_pgd_training_beats_standard_training_under_pgd_on_toy_data(tmp_path):
    train_set, test_set = load_dataset("toy2d", "train"), load_dataset("toy2d", "test", n=400)
    models = {}
    for method in ("standard", "pgd"):
        config = _toy_config(method, epochs=6)
        models[method], _ = train(config, train_set, tmp_path / method, runtime=TRAIN_QUIET)
    attack = PGD(0.65, steps=10, step_size=0.13, bounds=None)
    robust = {m: accuracy(models[m], attack(models[m], test_set.x, test_set.y), test_set.y) for m in models}
    assert accuracy(models["pgd"], test_set.x, test_set.y) > 0.95
    assert robust["pgd"] > robust["standard"] + 0.05, robust  # measured: 0.87 vs 0.78


def test_resume_on_other_data_is_refused(tmp_path):
    config = TrainConfig(arch="madry_cnn", arch_kwargs={"width": 0.125}, method="standard", epochs=2, batch_size=50, lr=0.01)
    train(config, load_dataset("mnist5k", "train", n=100), tmp_path, runtime=TRAIN_QUIET, stop_after=1)
    with pytest.raises(ValueError, match="trained on other data"):
        train(config, load_dataset("mnist5k", "train", n=150), tmp_path, resume=True, runtime=TRAIN_QUIET)
