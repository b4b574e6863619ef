"""Presets: ``extends`` merges a child over its parent; the official MNIST recipe is one."""
from __future__ import annotations

import pytest

from advpnml.config import load_config
from advpnml.training import TrainConfig, lr_at


def test_extends_merges_tables_and_replaces_lists(tmp_path):
    (tmp_path / "parent.toml").write_text('dataset = "mnist5k"\n[training]\nlr = 0.1\nepochs = 5\n'
                                          '[[evaluation.attacks]]\ncolumn = "FGSM"\nattack = "fgsm"\n'
                                          '[evaluation]\neps = 0.3\n')
    (tmp_path / "child.toml").write_text('extends = "parent.toml"\n[training]\nepochs = 7\n'
                                         '[[evaluation.attacks]]\ncolumn = "PGD"\nattack = "pgd"\n')
    config = load_config(tmp_path / "child.toml")
    assert config["training"] == {"lr": 0.1, "epochs": 7}, "tables merge key by key"
    assert [a["column"] for a in config["evaluation"]["attacks"]] == ["PGD"], "lists are replaced, not appended"
    assert config["evaluation"]["eps"] == 0.3 and config["dataset"] == "mnist5k" and "extends" not in config


def test_extends_cycle_is_one_line(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ValueError, match="extends it back"):
        load_config(tmp_path / "a.toml")


def test_official_mnist_recipe_extends_mnist_with_the_official_cnn_and_a_step_lr():
    official, mnist = load_config("mnist_official"), load_config("mnist")
    assert official["model"]["arch"] == "official_mnist_cnn"
    assert official["protocols"] == mnist["protocols"] and official["evaluation"] == mnist["evaluation"]
    config = TrainConfig.from_config(official)
    assert (config.epochs, config.adaptive_epochs, config.batch_size, config.attack_steps) == (106, 6, 50, 40)
    assert lr_at(config, 99.9 / 106) == pytest.approx(0.01) and lr_at(config, 100.0 / 106) == pytest.approx(0.001), \
        "the adaptive fine-tuning epochs run at a tenth of the learning rate"
    with pytest.raises(ValueError, match="lr_milestones"):
        TrainConfig(lr_schedule="step")
