"""Bring your own test-time defense: the same honest evaluation the Adversarial pNML gets, in one call.

    python examples/your_defense.py               # minutes on 2 CPU cores: 100 test digits, the strong suite
    python examples/your_defense.py --quick       # seconds: tiny budgets, to see it run (the test suite runs this)

Your defense is any ``nn.Module`` around the model (inputs in [0, 1], logits or log-probabilities out). Here it is
"median smoothing + a confidence step": a defense of the kind that looks strong against attacks that differentiate
it naively, because ``torch.median`` and ``round`` pass little gradient. advpnml attacks it through its own autograd,
by transfer from the base model and with black-box attacks, and runs the gradient-masking checklist on it; beside it
the published Hedge defense on the same model, by name.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from your_model import SmallCNN, train_briefly  # the example beside this one: its model and its brief PGD training

import advpnml


class MedianQuantize(nn.Module):
    """Your defense: each pixel replaced by the median of its 3x3 neighbourhood, rounded to 8 grey levels."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3)  # (N, C*9, H*W)
        median = patches.view(x.shape[0], x.shape[1], 9, -1).median(dim=2).values.view_as(x)
        return self.model(torch.round(median * 7) / 7)


def trained_model(epochs: int) -> nn.Module:
    """The small CNN of ``your_model.py``, PGD-trained briefly on the embedded digits (yours would load its weights)."""
    torch.manual_seed(0)
    model = SmallCNN()
    train_briefly(model, epochs=epochs, eps=0.1)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets and 8 samples: seconds, to see it run")
    parser.add_argument("--out", default="runs/example-your-defense", help="output folder (default: %(default)s)")
    args = parser.parse_args()
    start = time.perf_counter()
    model = trained_model(epochs=1 if args.quick else 4)
    test = advpnml.load_dataset("mnist5k", "test", n=8 if args.quick else 100)
    quick = {
        "PGD.steps": 3,
        "Adaptive.steps": 3,
        "Adaptive-margin.steps": 3,
        "APGD-T.steps": 3,
        "APGD-T adaptive.steps": 3,
        "APGD-T shortened.steps": 3,
        "APGD-CE.steps": 3,
        "APGD-CE adaptive.steps": 3,
        "APGD-T.n_targets": 2,
        "APGD-T adaptive.n_targets": 2,
        "APGD-T shortened.n_targets": 2,
        "Adaptive-margin exact-clip.steps": 3,
        "APGD-CE exact-clip.steps": 3,
        "Adaptive-margin 2nd-order.steps": 3,
        "APGD-CE 2nd-order.steps": 3,
        "APGD-T 2nd-order.steps": 3,
        "APGD-T 2nd-order.n_targets": 2,
        "HSJA.max_queries": 100,
        "Square.max_queries": 30,
        "defense.hedge.steps": 4,
    }
    found = {}
    for name, defense in (("yours", MedianQuantize(model)), ("hedge", "hedge")):
        found[name] = advpnml.evaluate(
            model,
            (test.x, test.y),
            eps=0.1,
            defense=defense,
            out=Path(args.out) / name,
            device="cpu",
            set=quick if args.quick else None,
            checks=4 if args.quick else 50,
            cascade=True,
            verbose=not args.quick,
        )
    for name, evaluation in found.items():
        print(f"\n## {name}\n\n{evaluation.markdown()}")
    print()
    for name, evaluation in found.items():
        summary = evaluation.summary()
        print(
            f"{name}: clean {100 * summary['defense']['clean']:.1f}%, worst case {100 * summary['defense']['worst case']:.1f}% "
            f"(the model alone: {100 * summary['base']['worst case']:.1f}%)"
        )
    print(f"{len(test)} samples, eps 0.1, {time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
