"""Which backward through the refinement makes the strongest attack through the defense (issues 27 and 34)?

For each model: margin-loss PGD and APGD-CE through the defense, each with our identity BPDA and with the refinement
differentiated through its gradient under each surrogate for ``sign`` (:mod:`advpnml.defense.second_order`), and each
with the refinement's clip passed straight through or differentiated exactly (``--clips``,
:data:`advpnml.config.CLIP_BACKWARDS`): same budget, same start, same images. Writes a table (robust accuracy; the
samples each backward alone breaks; the per-sample worst case over all of them; seconds) to --out.

    python benchmarks/second_order_surrogates.py --data-dir ../shared/data --n 100 --out results/second_order_surrogates
    python benchmarks/second_order_surrogates.py --clips straight,exact --backwards identity,second-order-ste,\
        second-order-tanh --early-stop --out results/clip_backward
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import advpnml
from advpnml.accel.allocator import tune_cpu_allocator
from advpnml.attacks import APGD, APGDT, PGD
from advpnml.config import SECOND_ORDER
from advpnml.evaluation.reporting import environment
from advpnml.models import use_memory_format

#: name: (source or "checkpoint", file: under data/weights for a source, else an advpnml checkpoint path; dataset, eps,
#: lambda). The demo model is runs/demo/model/model.pt after `make demo` (or `advpnml train --config mnist5k`).
MODELS = {
    "lenet5-eps0.1": ("advertorch_lenet5", "advertorch_mnist_lenet5/mnist_lenet5_advtrained.pt", "mnist", 0.1, 0.1),
    "lenet5": ("advertorch_lenet5", "advertorch_mnist_lenet5/mnist_lenet5_advtrained.pt", "mnist", 0.3, 0.1),
    "demo-eps0.1": ("checkpoint", "runs/demo/model/model.pt", "mnist5k", 0.1, 0.1),
    "demo": ("checkpoint", "runs/demo/model/model.pt", "mnist5k", 0.3, 0.1),
    "official": ("checkpoint", "results/mnist_official_cpu/model.pt", "mnist5k", 0.3, 0.1),
    "resnet4b": ("abcrown_resnet4b", "abcrown_cifar10_resnet4b/resnet4b.pth", "cifar10", 2 / 255, 0.0076),
    "convex_small": ("convex_small", "convex_cifar10_small_8px/cifar_small_8px.pth", "cifar10", 8 / 255, 0.03),
    "resnet18-control": ("autoattack_resnet18", None, "cifar10", 8 / 255, 0.03),
    # a weakly trained robust CNN (2 PGD-5 epochs, the test suite's recipe): `advpnml train --config mnist5k --epochs 2
    # --set model.width=0.25 --set training.lr=0.002 --set training.attack_steps=5 --set training.attack_step_size=0.1
    # --set training.eps_warmup_epochs=1 --out runs/robust-small`
    "robust-small-eps0.1": ("checkpoint", "runs/robust-small/model.pt", "mnist5k", 0.1, 0.1),
}
BACKWARDS = ("identity", *SECOND_ORDER)


def load(name: str, data_dir: str, n: int) -> tuple[torch.nn.Module, advpnml.data.LabeledTensors, float, float]:
    """Model ``name`` of :data:`MODELS` in eval mode and its dataset's first ``n`` test images, with its eps and lambda."""
    source, weights, dataset, eps, lam = MODELS[name]
    root = Path(data_dir)
    if source == "checkpoint":
        model = advpnml.load_checkpoint(weights)[0]
    else:
        model = advpnml.load_external(root / "weights" / weights if weights else None, source)
    data = advpnml.load_dataset(dataset, "test", root / ("mnist" if dataset == "mnist" else "cifar10"), n=n)
    use_memory_format(model, "cpu", "auto", example=data.x[:2])
    return model.eval(), data, eps, lam


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--attacks", default="PGD-margin,APGD-CE", help="of PGD-margin, APGD-CE, APGD-T")
    parser.add_argument("--targets", type=int, default=3, help="APGD-T's target classes (default: %(default)s)")
    parser.add_argument("--backwards", default=",".join(BACKWARDS), help="identity and the second-order surrogates")
    parser.add_argument("--clips", default="straight", help="the clip's backward: straight, exact or both (comma-separated)")
    parser.add_argument(
        "--early-stop", action="store_true", help="PGD leaves a sample at its first fooling iterate, as the suite's columns do"
    )
    parser.add_argument("--out", default="results/second_order_surrogates")
    args = parser.parse_args()
    tune_cpu_allocator()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        model, data, eps, lam = load(name, args.data_dir, args.n)
        defended = advpnml.AdversarialPnml(model, lam).eval()
        clean = accuracy(defended, data.x, data.y)
        attacks = {
            "PGD-margin": lambda: PGD(
                eps, args.steps, 2.5 * eps / args.steps, loss="margin", seed=0, early_stop="steps" if args.early_stop else False
            ),
            "APGD-CE": lambda: APGD(eps, steps=args.steps, loss="ce", seed=0),
            "APGD-T": lambda: APGDT(eps, steps=args.steps, n_targets=args.targets, seed=0),
        }

        def row(attack: str, backward: str, clip: str, robust: torch.Tensor, seconds: float | None, alone: int | None) -> dict:
            return {
                "model": name,
                "eps": eps,
                "lambda": lam,
                "samples": len(data.y),
                "attack": attack,
                "backward": backward,
                "clip": clip,
                "robust": robust.float().mean().item(),
                "breaks_alone": alone,
                "seconds": seconds,
            }

        combos = [(b, c) for c in args.clips.split(",") for b in args.backwards.split(",")]
        for attack_name in args.attacks.split(","):
            make = attacks[attack_name]
            found = {}
            for backward, clip in combos:
                target = defended.with_backward(backward, clip)
                start = time.perf_counter()
                x_adv = make()(target, data.x, data.y)
                found[backward, clip] = (clean & accuracy(defended, x_adv, data.y), time.perf_counter() - start)
                print(
                    f"{name} {attack_name:<10} {backward:<24} {clip:<8} {100 * found[backward, clip][0].float().mean():5.1f}%  "
                    f"{found[backward, clip][1]:7.1f} s",
                    flush=True,
                )
            robust_all = torch.stack([robust for robust, _ in found.values()]).all(0)
            for (backward, clip), (robust, seconds) in found.items():
                others = torch.stack([r for key, (r, _) in found.items() if key != (backward, clip)] or [clean]).all(0)
                rows.append(row(attack_name, backward, clip, robust, seconds, int((others & ~robust).sum())))
            rows.append(row(attack_name, "all, per sample", "", robust_all, None, None))
            print(f"{name} {attack_name:<10} {'all, per sample':<33} {100 * rows[-1]['robust']:5.1f}%", flush=True)
        write(out, rows, args)  # after every model: a cut run keeps what it measured


def write(out: Path, rows: list[dict], args: argparse.Namespace) -> None:
    (out / "surrogates.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "steps": args.steps,
                "targets": args.targets,
                "early_stop": args.early_stop,
                "environment": environment(),
            },
            indent=2,
        )
        + "\n"
    )
    lines = [
        "| model | eps | lambda | attack | backward | clip | robust (defense) | breaks alone | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        seconds = "-" if r["seconds"] is None else f"{r['seconds']:.0f}"
        alone = "-" if r["breaks_alone"] is None else str(r["breaks_alone"])
        lines.append(
            f"| {r['model']} | {r['eps']:.4g} | {r['lambda']:g} | {r['attack']} | {r['backward']} | {r['clip']} | "
            f"{100 * r['robust']:.1f}% | {alone} | {seconds} |"
        )
    (out / "surrogates.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
