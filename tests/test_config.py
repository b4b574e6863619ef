"""Presets: ``extends`` merges a child over its parent; the official MNIST recipe is one."""

from __future__ import annotations

import pytest

from advpnml.config import from_preset, load_config
from advpnml.training.trainer import TrainConfig, lr_at


def test_extends_merges_tables_and_replaces_lists(tmp_path):
    (tmp_path / "parent.toml").write_text(
        'dataset = "mnist5k"\n[training]\nlr = 0.1\nepochs = 5\n'
        '[[evaluation.attacks]]\ncolumn = "FGSM"\nattack = "fgsm"\n'
        "[evaluation]\neps = 0.3\n"
    )
    (tmp_path / "child.toml").write_text(
        'extends = "parent.toml"\n[training]\nepochs = 7\n[[evaluation.attacks]]\ncolumn = "PGD"\nattack = "pgd"\n'
    )
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
    config = TrainConfig.from_preset(from_preset("mnist_official"))
    assert (config.epochs, config.adaptive_epochs, config.batch_size, config.attack_steps) == (106, 6, 50, 40)
    assert lr_at(config, 99.9 / 106) == pytest.approx(0.01) and lr_at(config, 100.0 / 106) == pytest.approx(0.001), (
        "the adaptive fine-tuning epochs run at a tenth of the learning rate"
    )
    with pytest.raises(ValueError, match="lr_milestones"):
        TrainConfig(lr_schedule="step")


def test_params_change_an_inherited_suite_but_not_the_paper_protocol(tmp_path):
    (tmp_path / "child.toml").write_text(
        'extends = "mnist"\n[params.PGD]\nsteps = 7\n[protocols.paper.params.Adaptive]\nrestarts = 3\n'
    )
    preset = from_preset(tmp_path / "child.toml")
    ours = {s.column: s for s in preset.attacks()}
    paper = {s.column: s for s in preset.attacks(protocol="paper")}
    assert ours["PGD"].params == {"steps": 7, "step_size": 0.01, "restarts": 20, "early_stop": True}
    assert paper["PGD"].params["steps"] == 40, "[params] is ours; the official code's budgets stay"
    assert paper["Adaptive"].params["restarts"] == 3 and ours["Adaptive"].params["restarts"] == 20
    (tmp_path / "bad.toml").write_text('extends = "mnist"\n[params.Nope]\nsteps = 1\n')
    with pytest.raises(ValueError, match="no attack column 'Nope'"):
        from_preset(tmp_path / "bad.toml")


def test_image_presets_share_one_suite_and_the_paper_numbers_stay_with_their_dataset():
    from advpnml.config import list_configs

    assert "_suite" not in list_configs() and "_suite" in list_configs(hidden=True)
    columns = {name: [s.column for s in from_preset(name).attacks(suite="strong")] for name in ("mnist", "cifar10", "imagenet")}
    assert set(columns["mnist"]) == set(columns["cifar10"]) == set(columns["imagenet"])  # the order follows each one's budgets
    mnist, mnist5k = from_preset("mnist"), from_preset("mnist5k")
    assert mnist.paper_numbers("mnist", 0.3)["defense"]["Adaptive"] == 0.904
    assert mnist5k.paper_numbers("mnist5k", 0.3) is None and mnist.paper_numbers("mnist", 0.2) is None
    assert [s.params for s in mnist5k.attacks()][1] == {"steps": 40, "step_size": 0.01, "restarts": 2, "early_stop": True}
    assert mnist5k.defense(0.2).refine_eps == 0.2 and mnist5k.defense().refine_eps == 0.1


@pytest.mark.parametrize(
    "text, message",
    [
        ('extends = "mnist5k"\n[defense]\nrefine_epss = 0.1\n', "unknown key 'refine_epss'; expected one of: name, refine_eps"),
        ('extends = "mnist5k"\n[evaluation]\neps = "0.3"\n', "eps must be a number, got '0.3'"),
        ('extends = "mnist5k"\n[evaluation]\nbatch_size = 0\n', "batch_size must be a positive whole number"),
        ('extends = "mnist5k"\n[[evaluation.attacks]]\ncolumn = "X"\nattack = "fgsm"\nbasee = true\n', "unknown key 'basee'"),
        ('extends = "mnist5k"\nsweep = 1\n', "unknown key 'sweep'"),
        ("extends = 5\n", "extends must be a preset name or a .toml path \\(a string\\), got 5"),
    ],
)
def test_a_config_typo_or_wrong_type_is_refused_by_name(tmp_path, text, message):
    (tmp_path / "typo.toml").write_text(text)
    with pytest.raises(ValueError, match=message):
        from_preset(tmp_path / "typo.toml")


def test_a_set_typo_is_refused_and_every_builtin_preset_checks():
    from advpnml.config import list_configs

    for name in list_configs():
        from_preset(name)
    with pytest.raises(ValueError, match="unknown key 'refine_epss'"):
        from_preset("mnist5k", ["defense.refine_epss=0.2"])
    assert from_preset("mnist5k", ["defense.refine_eps=0.2"]).defense().refine_eps == 0.2


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("epochs", "2.5", r"\[training\] epochs must be a whole number >= 1, got 2.5"),
        ("lr", '"fast"', r"\[training\] lr must be a finite number >= 0, got 'fast'"),
        ("batch_size", "0", r"batch_size must be a whole number >= 1, got 0"),
        ("lr_milestones", "[1.5]", r"lr_milestones must be a list of whole numbers"),
        ("adaptive_epochs", "true", r"adaptive_epochs must be a whole number >= 0, got True"),
        ("arch", "3", r"arch must be a string, got 3"),
    ],
)
def test_training_values_are_type_checked_by_name(key, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_preset(from_preset("mnist5k", [f"training.{key}={value}"]))


def test_every_training_field_has_a_type_check():
    from dataclasses import fields

    from advpnml.training.trainer import _FIELD_TYPES

    assert set(_FIELD_TYPES) == {f.name for f in fields(TrainConfig)}


def test_a_cascade_runs_cheap_gradient_attacks_first_and_the_black_box_last():
    from advpnml.config import COST_RANKS, cascade_order

    strong = from_preset("mnist").attacks(suite="autoattack")
    ranks = [cascade_order({"column": s.column, "attack": s.attack, "params": s.params, "defense": s.defense}) for s in strong]
    assert ranks == sorted(ranks), [s.column for s in strong]
    names = [s.column for s in strong]
    assert names[-3:] == ["Square", "HSJA", "AutoAttack"], "score-based, then decision-based, then the reference"
    assert names.index("APGD-T") < names.index("APGD-T adaptive") < names.index("APGD-CE adaptive"), names
    untargeted = ("Adaptive", "Adaptive-margin", "Joint hypotheses", "APGD-CE exact-clip")
    assert all(names.index("APGD-T adaptive") < names.index(c) < names.index("APGD-CE 2nd-order") for c in untargeted), names
    assert names.index("APGD-CE 2nd-order") < names.index("APGD-T 2nd-order") < names.index("Square")
    assert COST_RANKS[cascade_order({"attack": "pgd", "defense": "transfer"})[0]] == "transfer"
    named = ["HSJA", "FGSM"]
    assert [s.column for s in from_preset("mnist").attacks(named)] == named, "columns named on the command line keep their order"
