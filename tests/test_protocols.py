"""`--protocol paper`: each of the official code's choices pinned on a tiny model, and the side-by-side table."""

from __future__ import annotations

from importlib import resources

import pytest
import torch
import torch.nn as nn

from advpnml import AdversarialPnml
from advpnml.attacks import PGD, create_attack
from advpnml.cli import main
from advpnml.config import attack_specs, load_config, protocol_bpda
from advpnml.models import save_checkpoint


class _Staircase(nn.Module):
    """3 classes on a 1-D input in [0, 1]: left of 0.5 label 1 wins narrowly (a fooling point, CE 0.91 for
    label 0); right of it label 0 wins but by less than its rivals' combined mass (not fooled, CE 1.03)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        right = (x.flatten(1)[:, :1] >= 0.5).to(x.dtype) + 0.0 * x.flatten(1)[:, :1]  # differentiable, gradient 0
        return torch.cat([torch.ones_like(right), 1.1 - 0.2 * right, 0.9 * right], dim=1)


def test_highest_final_loss_rule_can_keep_a_restart_that_does_not_fool():
    x, y = torch.full((16, 1), 0.5), torch.zeros(16, dtype=torch.long)
    model = _Staircase()
    # step 0: each restart's last iterate is its random start, spread over [0, 1]
    ours = PGD(0.5, steps=1, step_size=0.0, restarts=16, seed=1)(model, x, y)
    official = PGD(0.5, steps=1, step_size=0.0, restarts=16, seed=1, selection="last-highest-loss")(model, x, y)
    assert (model(ours).argmax(1) != y).all(), "ours keeps a fooling iterate whenever a restart found one"
    assert (model(official).argmax(1) == y).all(), "the official rule keeps the higher loss: CE 1.03 > 0.91, yet not fooled"


def test_highest_final_loss_with_one_restart_is_the_last_iterate(standard_model, mnist5k_test):
    x, y = mnist5k_test.x[:20], mnist5k_test.y[:20]
    official = PGD(0.3, steps=5, step_size=0.05, seed=3, selection="last-highest-loss")(standard_model, x, y)
    madry = PGD(0.3, steps=5, step_size=0.05, seed=3, keep_best=False)(standard_model, x, y)
    torch.testing.assert_close(official, madry)


def test_clamp_in_graph_bpda_zeroes_the_gradient_of_saturated_pixels(tiny_cnn):
    torch.manual_seed(0)
    x = torch.full((3, 1, 28, 28), 0.5)  # mid-grey: a step of 0.1 never leaves [0, 1]
    x[:, :, :5] = 0.0  # black rows and white rows: a step toward outside the box saturates
    x[:, :, -5:] = 1.0
    labels = torch.arange(10).expand(3, 10)
    grads, outputs = {}, {}
    for mode in ("identity", "clamp"):
        defense = AdversarialPnml(tiny_cnn, 0.1, bpda=mode).eval()
        xi = x.clone().requires_grad_(True)
        refined = defense.refine(xi, labels)
        (grads[mode],) = torch.autograd.grad(refined.sum(), xi)
        outputs[mode] = refined.detach()
    torch.testing.assert_close(outputs["clamp"], outputs["identity"])  # same forward
    assert (grads["identity"] == 10).all(), "identity BPDA: each of the 10 hypotheses passes gradient 1"
    unclamped = x.unsqueeze(1) - 0.1 * defense._shared_first_gradients(x.clone(), labels).sign()
    in_box = ((unclamped >= 0) & (unclamped <= 1)).sum(1).to(x.dtype)
    torch.testing.assert_close(grads["clamp"], in_box)
    assert (
        (grads["clamp"][:, :, 5:-5] == 10).all()
        and (grads["clamp"][:, :, :5] < 10).any()
        and (grads["clamp"][:, :, -5:] < 10).any()
    ), "black and white pixels pushed out of the box pass no gradient"


def test_clamp_bpda_defense_gives_the_same_predictions(tiny_cnn):
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(AdversarialPnml(tiny_cnn, 0.1, bpda="clamp")(x), AdversarialPnml(tiny_cnn, 0.1)(x))
    with pytest.raises(ValueError, match="bpda must be one of"):
        AdversarialPnml(tiny_cnn, 0.1, bpda="straight")


def test_hsja_distance_scoring_returns_the_clean_input_beyond_eps():
    """Linear 2-class model on [0,1]^4 whose boundary is at l_inf distance 0.1 from x (along every coordinate)."""
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
        model.bias.copy_(torch.tensor([-1.6, 1.6]))  # class 0 iff sum(x) > 1.6: x = 0.5 sits 0.1 away in l_inf
    x, y = torch.full((2, 4), 0.5), torch.zeros(2, dtype=torch.long)
    far = create_attack("hsja", eps=0.05, max_iters=29, max_queries=100000, score="distance", seed=0)
    assert torch.equal(far(model, x, y), x), "distance 0.1 > eps 0.05: the sample is robust and keeps its clean input"
    near = create_attack("hsja", eps=0.2, max_iters=29, max_queries=100000, score="distance", seed=0)
    adv = near(model, x, y)
    assert (model(adv).argmax(1) != y).all() and ((adv - x).abs().amax(1) <= 0.2).all()
    assert (near.distances < 0.12).all(), "29 iterations find the boundary near its true distance 0.1"
    with pytest.raises(ValueError, match="score must be"):
        create_attack("hsja", eps=0.1, score="both")


def test_paper_protocol_columns_come_from_the_preset():
    config = load_config("mnist")
    specs = {s.column: s for s in attack_specs(config, None, "paper", "paper")}
    assert specs["PGD"].params["steps"] == 40 and specs["PGD"].params["selection"] == "last-highest-loss"
    assert specs["Adaptive"].params["steps"] == 50 and specs["HSJA"].params["max_iters"] == 29
    assert protocol_bpda(config, "paper") == "clamp" and protocol_bpda(config, "strict") == "identity"
    cifar = {s.column: s for s in attack_specs(load_config("cifar10"), None, "paper", "paper")}
    assert cifar["PGD"].base and cifar["PGD"].defense is None
    assert cifar["PGD-20"].params["steps"] == 20 and cifar["PGD-20"].defense == "transfer" and not cifar["PGD-20"].base
    with pytest.raises(ValueError, match=r"protocols\.paper"):
        attack_specs(load_config("toy2d"), None, "paper", "paper")  # mnist5k now inherits mnist's


def test_protocol_both_writes_the_side_by_side_table(standard_model, tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    text = resources.files("advpnml.configs").joinpath("mnist.toml").read_text()
    text = text.replace('dataset = "mnist"', 'dataset = "mnist5k"')
    for old, new in (
        ("steps = 300", "steps = 3"),
        ("steps = 50,", "steps = 3,"),
        ("steps = 40,", "steps = 3,"),
        ("restarts = 20", "restarts = 2"),
        ("max_iters = 29", "max_iters = 2"),
    ):
        text = text.replace(old, new)
    config.write_text(text)
    checkpoint = save_checkpoint(tmp_path / "m.pt", standard_model, dataset="mnist5k")
    out = tmp_path / "both"
    argv = [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--config",
        str(config),
        "--samples",
        "8",
        "--checks",
        "0",
        "--attacks",
        "FGSM,PGD,Adaptive,Adaptive-margin",
        "--protocol",
        "both",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    table = (out / "protocols.md").read_text()
    assert (out / "strict" / "records.jsonl").is_file() and (out / "paper" / "records.jsonl").is_file()
    assert "| Adversarial pNML | Adaptive |" in table and "paper minus strict" in table and "clamp" in table
    assert "highest final loss" in table, "each column's note says what moves its number"
    assert "Not run here (`--attacks`): HSJA" in table and "29 iterations" not in table
    strict = (out / "strict" / "results.md").read_text()
    assert "Adaptive-margin" in strict and "Adaptive-margin" not in (out / "paper" / "results.md").read_text(), (
        "--attacks under both: each protocol runs the named columns it has"
    )
    assert main(argv[:-4] + ["--protocol", "both", "--cascade", "--out", str(out)]) == 2
    assert "drop --cascade" in capsys.readouterr().err
