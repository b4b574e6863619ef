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
