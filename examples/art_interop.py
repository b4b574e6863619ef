"""IBM ART and advpnml: the defended model as an ART ``PyTorchClassifier``, ART's attacks through it, ours beside them.

    pip install adversarial-robustness-toolbox    # or: pip install 'advpnml[interop]'
    python examples/art_interop.py                # about a minute on 2 CPU cores
    python examples/art_interop.py --quick        # seconds (the test suite runs this)

``AdversarialPnml`` is itself a classifier (it returns log q, eq. 12): ART wraps it like any PyTorch model, with NLL
as the loss (NLL on log q is cross-entropy on q). Its refinement has an explicit identity backward (the paper's
BPDA), so every gradient ART asks for is the adaptive attack's: ART's PGD through the wrapper is the paper's adaptive
attack. Here it runs beside advpnml's PGD at the same radius, steps and step size; then ART's adversarial examples go
into advpnml's per-sample bookkeeping like any other column would.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn as nn

import advpnml
from advpnml.attacks import PGD
from advpnml.runtime import QUIET
from advpnml.training.trainer import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller model, 20 samples, 10 steps: seconds")
    args = parser.parse_args()
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        raise SystemExit("this example needs ART: pip install adversarial-robustness-toolbox") from None
    start = time.perf_counter()
    # a small PGD-trained MNIST CNN (yours: advpnml.load_external / load_checkpoint, or any nn.Module)
    config = TrainConfig(
        arch="madry_cnn",
        arch_kwargs={"width": 0.25},
        method="pgd",
        epochs=2,
        batch_size=50,
        optimizer="adam",
        lr=2e-3,
        weight_decay=0.0,
        eps=0.3,
        attack_steps=5,
        attack_step_size=0.1,
        eps_warmup_epochs=1,
    )
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = train(
            config, advpnml.load_dataset("mnist5k", "train"), tmp, runtime=replace(QUIET, memory_format="contiguous")
        )
    defended = advpnml.AdversarialPnml(model.eval(), refine_eps=0.1).eval()
    classifier = PyTorchClassifier(
        model=defended, loss=nn.NLLLoss(), input_shape=(1, 28, 28), nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu"
    )

    test = advpnml.load_dataset("mnist5k", "test", n=20 if args.quick else 200)
    x, y = test.x, test.y
    eps, steps = 0.15, 10 if args.quick else 40
    art_pgd = ProjectedGradientDescent(
        classifier, eps=eps, eps_step=2.5 * eps / steps, max_iter=steps, num_random_init=1, batch_size=100, verbose=False
    )
    np.random.seed(0)
    x_art = torch.from_numpy(art_pgd.generate(x.numpy(), y=y.numpy()))
    x_ours = PGD(eps, steps, 2.5 * eps / steps, seed=0)(defended, x, y)
    with torch.no_grad():
        clean = defended(x).argmax(1) == y
        by_art, by_ours = (defended(x_art).argmax(1) == y), (defended(x_ours).argmax(1) == y)
    print(f"Adversarial pNML (lambda 0.1) on {len(y)} MNIST test digits, eps {eps}, PGD-{steps} through the defense:")
    print(
        f"  clean {100 * clean.float().mean():.1f}%   ART's PGD {100 * by_art.float().mean():.1f}%   advpnml's PGD "
        f"{100 * by_ours.float().mean():.1f}%   both (per sample) {100 * (clean & by_art & by_ours).float().mean():.1f}%"
    )
    print(
        f"  the ART classifier's predictions equal the defense's: "
        f"{np.allclose(classifier.predict(x[:8].numpy()), defended(x[:8]).detach().numpy(), atol=1e-5)}"
    )
    print(
        f"{time.perf_counter() - start:.0f} s. For every attack of the strong suite on the same model: "
        "advpnml.evaluate(model, (x, y), eps=0.15, lam=0.1)"
    )


if __name__ == "__main__":
    main()
