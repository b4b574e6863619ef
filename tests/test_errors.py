"""Every bad input of DESIGN.md fails with one line naming the value and what was expected."""

from __future__ import annotations

import pytest
import torch

from advpnml import AdversarialPnml


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(refine_eps=-0.1), r"refine_eps \(lambda\) must be a finite number >= 0, got -0.1"),
        (dict(refine_eps=float("nan")), "refine_eps"),
        (dict(refine_eps=0.1, top_k=0), "top_k must be an integer >= 1, got 0"),
        (dict(refine_eps=0.1, refine_steps=0), "refine_steps must be an integer >= 1, got 0"),
        (dict(refine_eps=0.1, bounds=(1, 0)), "low < high"),
    ],
)
def test_bad_defense_settings(tiny_cnn, kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdversarialPnml(tiny_cnn, **kwargs)


def test_top_k_above_num_classes(tiny_cnn):
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 10\].*got 11"):
        AdversarialPnml(tiny_cnn, 0.1, top_k=11)(torch.rand(2, 1, 28, 28))


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.full((2, 1, 28, 28), float("nan")), "NaN"),
        (torch.full((2, 1, 28, 28), 255.0), r"values in \[255, 255\], expected inside \[0, 1\]"),
        (-torch.ones(2, 1, 28, 28), "expected inside"),
        (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "floating tensor"),
        (torch.zeros(784), "at least 2 dims"),
    ],
)
def test_bad_inputs(tiny_cnn, x, message):
    with pytest.raises(ValueError, match=message):
        AdversarialPnml(tiny_cnn, 0.1)(x)


def test_not_a_module():
    with pytest.raises(ValueError, match="must be a torch.nn.Module"):
        AdversarialPnml(lambda x: x, 0.1)


def test_an_empty_batch_gives_zero_rows_and_leaves_the_defense_usable(tiny_cnn):
    defense = AdversarialPnml(tiny_cnn, 0.1)
    out = defense.hypotheses(torch.rand(0, 1, 28, 28))
    assert out.log_q.shape == (0, 10) and out.regret.shape == (0,)
    assert defense(torch.rand(3, 1, 28, 28)).shape == (3, 10), "the empty batch must not poison the size cache"
    assert AdversarialPnml(tiny_cnn, 0.1, top_k=3).hypotheses(torch.rand(0, 1, 28, 28)).labels.shape == (0, 3)


class _Returns(torch.nn.Module):
    def __init__(self, what):
        super().__init__()
        self.what, self.linear = what, torch.nn.Linear(4, 3)

    def forward(self, x):
        logits = self.linear(x.flatten(1))
        return {"tuple": (logits,), "int": logits.long(), "nan": logits * float("nan")}[self.what]


@pytest.mark.parametrize("what, message", [("tuple", "got tuple"), ("int", "torch.int64 tensor"), ("nan", "NaN or inf logits")])
def test_a_model_that_does_not_return_finite_float_logits_is_one_line(what, message):
    with pytest.raises(ValueError, match=message):
        AdversarialPnml(_Returns(what), 0.1)(torch.rand(2, 1, 2, 2))


def test_wrong_dtype_and_shape_are_one_line(tiny_cnn, tiny_mlp):
    with pytest.raises(ValueError, match="dtype torch.float64 but the model's parameters are torch.float32"):
        AdversarialPnml(tiny_cnn, 0.1)(torch.rand(2, 1, 28, 28, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"cannot take inputs of shape \(2, 28, 28\)"):
        AdversarialPnml(tiny_cnn, 0.1)(torch.rand(2, 28, 28))


class _Trap(torch.nn.Module):
    """Labels 0 and 1 lead on x0 = 0.5; any refined input (moved by lambda) hands label 2 a lead of ~3e4."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        flat = x.flatten(1)
        lead = 3e4 * ((flat - 0.5) ** 2).sum(1, keepdim=True) / 0.25
        return torch.cat([self.linear(flat) + torch.tensor([2.0, 1.0]), lead, torch.zeros(len(x), 1)], 1)


def test_top_k_never_lets_an_excluded_label_win_whatever_the_logit_scale():
    torch.manual_seed(0)
    out = AdversarialPnml(_Trap(), 0.5, top_k=2, bounds=None).hypotheses(torch.full((3, 1, 2, 2), 0.5))
    assert set(out.labels.flatten().tolist()) <= {0, 1}
    assert (out.log_p[:, :2] < -1e4).all(), "the trap sprang: both refined labels lost by more than the mask"
    assert (out.log_q <= 0).all() and set(out.log_q.argmax(1).tolist()) <= {0, 1}
    # float32 at logits of 3e4 keeps ~3 digits: q still sums to 1 within that
    torch.testing.assert_close(out.log_q.exp().sum(1), torch.ones(3), atol=1e-2, rtol=0)


class _Misbehaving(torch.nn.Module):
    """A model whose outputs break the defense's contract in one way: wrong row count, no input gradient, classes that
    change between calls."""

    def __init__(self, how):
        super().__init__()
        self.how, self.linear, self.calls = how, torch.nn.Linear(4, 3), 0

    def forward(self, x):
        self.calls += 1
        logits = self.linear(x.flatten(1))
        if self.how == "rows":
            return logits[:1]
        if self.how == "constant":
            return torch.zeros(len(x), 3)
        if self.how == "one-logit":
            return logits[:, :1]
        return logits if self.calls == 1 else torch.cat([logits, logits[:, :1]], 1)


@pytest.mark.parametrize(
    "how, message",
    [
        ("rows", r"model returned 1 rows of logits for \d+ inputs"),
        ("constant", r"the model's logits do not depend on its input"),
        ("one-logit", r"at least 2 logits per input"),
        ("classes", r"model returned 4 classes after 3 on an earlier call"),
    ],
)
def test_bad_model_outputs_are_one_line_from_the_defense(how, message):
    defense = AdversarialPnml(_Misbehaving(how), 0.1, bounds=None)
    with pytest.raises(ValueError, match=message):
        defense(torch.rand(2, 1, 2, 2))
        defense(torch.rand(2, 1, 2, 2))  # the class count changes on the second call
    with pytest.raises(ValueError, match=message):
        expanded = AdversarialPnml(_Misbehaving(how), 0.1, bounds=None, gradient_mode="expanded")
        expanded(torch.rand(2, 1, 2, 2))
        expanded(torch.rand(2, 1, 2, 2))


def test_attack_settings_that_cannot_attack_are_one_line():
    from advpnml.attacks import FGSM, PGD
    from advpnml.config import AttackSpec
    from advpnml.evaluation.engine import build_attack

    assert PGD(0.1, steps=5, step_size=0).step_size == 0, "the library keeps a step of 0 (a random-start probe)"
    with pytest.raises(ValueError, match="attack column 'PGD': step_size 0 never moves from its start"):
        build_attack(AttackSpec("PGD", "pgd", {"step_size": 0}), 0.1, (0.0, 1.0), 0)
    with pytest.raises(ValueError, match=r"eps 1000000000.0 is wider than the input range \[0, 1\].*use at most 1"):
        FGSM(1e9)
    assert FGSM(1e9, bounds=None).eps == 1e9, "unbounded inputs (the toy data) have no such limit"
