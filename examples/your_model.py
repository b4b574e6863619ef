"""Bring your own model and data: the honest evaluation of a classifier advpnml has never seen, in one call.

    python examples/your_model.py                 # a few minutes on 2 CPU cores: the strong suite on 100 test digits
    python examples/your_model.py --quick         # seconds: tiny budgets, to see it run (the test suite runs this)

What it does, as you would with your own model: define an ``nn.Module`` (here a small CNN), train it briefly on the
embedded MNIST digits (yours would load its weights), save the weights as a plain state dict and the test images
as an ``.npz``, then evaluate the model and its Adversarial pNML defense with ``advpnml.evaluate``. The same run
from the command line is printed at the end: it reads the same files and gives the same numbers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import advpnml


class SmallCNN(nn.Module):
    """Your model: inputs in [0, 1], logits out (normalize inside, or pass normalize=(mean, std))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(x.flatten(1))


def train_briefly(model: nn.Module, epochs: int, eps: float) -> None:
    """A few epochs of PGD training on the embedded digits (the defense is meant for robust models)."""
    from advpnml.attacks import PGD

    data = advpnml.load_dataset("mnist5k", "train")
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), 50):
            x, y = data.x[order[i : i + 50]], data.y[order[i : i + 50]]
            x_adv = PGD(eps * min(1.0, (epoch + 1) / 2), steps=5, step_size=eps / 2, seed=i)(model, x, y)
            loss = F.cross_entropy(model.train()(x_adv), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets and 6 samples: seconds, to see it run")
    parser.add_argument("--out", default="runs/example-your-model", help="output folder (default: %(default)s)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    torch.manual_seed(0)
    model = SmallCNN()
    train_briefly(model, epochs=1 if args.quick else 4, eps=0.1)
    torch.save(model.state_dict(), out / "small_cnn.pt")  # a plain state dict, as most projects save
    test = advpnml.load_dataset("mnist5k", "test", n=6 if args.quick else 100)
    x = (test.x * 255).round().byte().numpy()  # uint8 pixels, as images are usually stored
    np.savez(out / "digits.npz", x=x, y=test.y.numpy())

    quick = {
        "PGD.steps": 3,
        "Adaptive.steps": 3,
        "Adaptive-margin.steps": 3,
        "Joint hypotheses.steps": 3,
        "APGD-T.steps": 3,
        "APGD-T adaptive.steps": 3,
        "APGD-CE.steps": 3,
        "APGD-CE adaptive.steps": 3,
        "APGD-T.n_targets": 2,
        "APGD-T adaptive.n_targets": 2,
        "Adaptive-margin exact-clip.steps": 3,
        "APGD-CE exact-clip.steps": 3,
        "Adaptive-margin 2nd-order.steps": 3,
        "APGD-CE 2nd-order.steps": 3,
        "APGD-T 2nd-order.steps": 3,
        "APGD-T 2nd-order.n_targets": 2,
        "HSJA.max_queries": 100,
        "Square.max_queries": 20,
    }
    found = advpnml.evaluate(
        model,
        (x, test.y.numpy()),
        eps=0.1,
        lam=0.1,
        suite="strong",
        out=out / "eval",
        device="cpu",
        set=quick if args.quick else None,
        checks=4 if args.quick else 50,
    )

    print(f"\n{found.markdown()}\n")
    summary = found.summary()
    print(
        f"worst case: base {100 * summary['base']['worst case']:.1f}%, defense {100 * summary['defense']['worst case']:.1f}% "
        f"({len(found.records)} samples, eps 0.1, lambda 0.1, {time.perf_counter() - start:.0f} s in all)"
    )
    sets = " ".join(f"--set '{k}={v}'" for k, v in quick.items()) if args.quick else ""
    print(
        "the same evaluation from the command line:\n"
        f"  advpnml evaluate --model {Path(__file__).resolve()}:SmallCNN --checkpoint {out / 'small_cnn.pt'} "
        f"--data {out / 'digits.npz'} --eps 0.1 --lam 0.1 --suite strong {sets} --out {out / 'eval-cli'}"
    )


if __name__ == "__main__":
    main()
