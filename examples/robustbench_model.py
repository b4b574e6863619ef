"""A RobustBench model evaluated with ``advpnml.evaluate``: the paper's own CIFAR-10 and ImageNet models.

NOT RUN IN CI: RobustBench downloads its checkpoints from the internet and needs torchvision, neither of which the
project's CI has (the test suite only checks that this file compiles). On a machine with both:

    pip install git+https://github.com/RobustBench/robustbench.git torchvision
    python examples/robustbench_model.py --data-dir DATA          # DATA/cifar-10-batches-py/test_batch
    python examples/robustbench_model.py --imagenet --data-dir IMAGENET_VAL

The paper evaluated Carmon et al.'s WRN-28-10 (RobustBench ``Carmon2019Unlabeled``, Linf) on CIFAR-10 at eps 8/255
with lambda 0.03, and Wong et al.'s fast-AT ResNet-50 (``Wong2020Fast``) on 100 ImageNet classes. RobustBench models
take inputs in [0, 1] and normalize inside, as advpnml expects, so they go in as they are; ``preset="cifar10"``
takes the paper's CIFAR-10 budgets (PGD and the adaptive attack 200 x 0.007 with 5 restarts, HopSkipJump 26,000
queries). On a GPU the strong suite on 1,000 images takes hours for a WRN-28-10: start with ``n=100``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn

import advpnml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 (cifar-10-batches-py) or, with --imagenet, ImageNet val")
    parser.add_argument("--imagenet", action="store_true", help="Wong2020Fast on 100 ImageNet classes instead")
    parser.add_argument("--n", type=int, default=100, help="test samples (default: %(default)s)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    from robustbench.utils import load_model

    if args.imagenet:
        model = load_model("Wong2020Fast", dataset="imagenet", threat_model="Linf")
        # the paper keeps the first 100 logits and the first 100 classes; the imagenet preset and dataset do the same
        model, dataset, out = FirstLogits(model, 100), "imagenet", "runs/robustbench-wong2020fast"
    else:
        model = load_model("Carmon2019Unlabeled", dataset="cifar10", threat_model="Linf")
        dataset, out = "cifar10", "runs/robustbench-carmon2019"
    found = advpnml.evaluate(
        model, dataset, preset=dataset, n=args.n, data_dir=args.data_dir, device=args.device, suite="strong", out=out
    )
    print(found.markdown())


class FirstLogits(nn.Module):
    """The first ``k`` logits of an ImageNet model (the paper's 100-class subset)."""

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, : self.k]


if __name__ == "__main__":
    main()
