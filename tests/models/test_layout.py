"""channels_last is a layout, not a model change: same outputs, same defense, attacks still valid."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from advpnml import AdversarialPnml, create_model
from advpnml.attacks import PGD
from advpnml.config import AttackSpec, EvalSettings
from advpnml.evaluation.engine import evaluate
from advpnml.models import resolve_memory_format, set_memory_format, use_memory_format
from advpnml.runtime import QUIET


@pytest.fixture
def cifar_pair():
    torch.manual_seed(0)
    model = create_model("preact_resnet18", width=8).eval()
    return model, set_memory_format(copy.deepcopy(model), "channels_last")


def test_auto_is_channels_last_for_conv_models_on_cpu_only(tiny_cnn, tiny_mlp):
    assert resolve_memory_format(tiny_cnn, "cpu") == "channels_last"
    assert resolve_memory_format(tiny_cnn, "cuda") == "contiguous"
    assert resolve_memory_format(tiny_mlp, "cpu") == "contiguous"
    assert resolve_memory_format(tiny_mlp, "cpu", "channels_last") == "channels_last"
    with pytest.raises(ValueError, match="memory_format"):
        resolve_memory_format(tiny_cnn, "cpu", "nhwc")
    with pytest.raises(ValueError, match="memory_format"):
        set_memory_format(tiny_cnn, "auto")


def test_a_single_channel_conv_is_restrided_too(tiny_cnn):
    """(C_out, 1, k, k) counts as channels-last either way; only explicit channels-last strides make
    the convolution's output channels-last (the MNIST CNN's whole speed-up depends on it)."""
    set_memory_format(tiny_cnn, "channels_last")
    assert tiny_cnn.conv1.weight.stride()[1] == 1
    with torch.no_grad():
        out = tiny_cnn.conv1(torch.rand(2, 1, 28, 28))
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()


def test_set_memory_format_changes_strides_not_values(cifar_pair):
    model, fast = cifar_pair
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), atol=1e-5, rtol=1e-5)
    set_memory_format(fast, "contiguous")
    assert fast.conv1.weight.is_contiguous()


def test_defense_is_the_same_in_either_layout(cifar_pair):
    model, fast = cifar_pair
    x = torch.rand(3, 3, 32, 32)
    out, out_fast = AdversarialPnml(model, 0.03).hypotheses(x), AdversarialPnml(fast, 0.03).hypotheses(x)
    torch.testing.assert_close(out_fast.log_q, out.log_q, atol=1e-4, rtol=0)
    torch.testing.assert_close(out_fast.regret, out.regret, atol=1e-4, rtol=0)
    # the input gradient through the defense (BPDA) keeps the input's shape and is finite
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(AdversarialPnml(fast, 0.03)(xr)[:, 0].sum(), xr)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_pgd_on_a_channels_last_model_stays_in_the_ball(cifar_pair):
    _, fast = cifar_pair
    torch.manual_seed(1)
    x = torch.rand(6, 3, 32, 32)
    y = fast(x).argmax(1)
    adv = PGD(8 / 255, 5, 2 / 255)(fast, x, y)
    assert adv.shape == x.shape and (adv - x).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert (fast(adv).argmax(1) != y).any()


def test_evaluate_gives_the_same_records_in_either_layout(tiny_cnn, mnist5k_test):
    specs = [
        AttackSpec("PGD", "pgd", {"steps": 3, "step_size": 0.05}, base=True, defense="transfer"),
        AttackSpec("Adaptive", "pgd", {"steps": 2, "step_size": 0.05, "loss": "margin"}, base=False, defense="direct"),
    ]
    settings = EvalSettings(dataset="mnist5k", split="test", n=6, eps=0.1, refine_eps=0.1, attacks=specs, batch_size=3, seed=0)
    data = mnist5k_test.head(6)
    records = {}
    for layout in ("contiguous", "channels_last"):
        model = copy.deepcopy(tiny_cnn)
        records[layout] = evaluate(model, data, settings, runtime=replace(QUIET, memory_format=layout)).records
        assert model.conv2.weight.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in rs] for rs in records.values()]
    assert strip[0] == strip[1]


class ViewFlattenCNN(torch.nn.Module):
    """A user model that flattens with ``.view``: it cannot run on channels-last activations."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.shape[0], -1))


def test_auto_falls_back_to_contiguous_when_the_model_needs_it():
    torch.manual_seed(0)
    model, x = ViewFlattenCNN().train(), torch.rand(3, 3, 8, 8)
    assert use_memory_format(model, "cpu", "auto", example=x) == "contiguous"
    assert model.conv.weight.is_contiguous() and model.training, "weights back in place, mode restored"
    model(x)  # runs
    with pytest.raises(RuntimeError):
        use_memory_format(model, "cpu", "channels_last", example=x)  # asked for explicitly: no silent fallback
        model(x)
    torch.manual_seed(0)
    fine = create_model("preact_resnet18", width=8)
    assert use_memory_format(fine, "cpu", "auto", example=x.new_zeros(2, 3, 32, 32)) == "channels_last"
