"""Does bf16 change the verdict? Agreement of bf16 autocast with fp32 on real data and a real robust model (issue 18).

For the base model and the defense (the dataset preset's lambda): the fraction of samples with the same
prediction, and for PGD (the base's attack; run on the defense it is the paper's adaptive attack) the
fraction with the same outcome, robust or not, with both accuracies. Writes JSON and Markdown.

    python benchmarks/precision_agreement.py --dataset mnist --source advertorch_lenet5 \
        --checkpoint ../shared/data/weights/advertorch_mnist_lenet5/mnist_lenet5_advtrained.pt \
        --data-dir ../shared/data --samples 500 --device cuda --out results/gpu_precision_mnist
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from advpnml.accel.precision import agreement
from advpnml.attacks import PGD
from advpnml.config import from_preset
from advpnml.data import load_dataset
from advpnml.defense import AdversarialPnml
from advpnml.jobs import load_model
from advpnml.runtime import resolve_device


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--source", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--steps", type=int, default=20, help="PGD steps (step size 2.5 eps / steps)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    preset = from_preset(args.dataset)
    model, _ = load_model(args.checkpoint, args.source)
    model = model.to(device).eval()
    data = load_dataset(args.dataset, "test", args.data_dir, False, args.samples)
    x = torch.stack([data[i][0] for i in range(len(data))]).to(device)
    y = torch.as_tensor([int(data[i][1]) for i in range(len(data))], device=device)
    eps, spec, bounds = preset.eps, preset.defense(), data.info.bounds
    attack = PGD(eps, args.steps, 2.5 * eps / args.steps, bounds=bounds, seed=0)
    start = time.perf_counter()
    rows = agreement(
        model,
        lambda m: {"base": m, "defense": AdversarialPnml.from_spec(m, spec, bounds, check_inputs=False)},
        x,
        y,
        {f"PGD-{args.steps}": attack},
        "bf16",
        args.batch_size,
    )
    seconds = time.perf_counter() - start
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    result = {
        "device": name,
        "torch": torch.__version__,
        "dataset": args.dataset,
        "model": args.source or args.checkpoint,
        "samples": len(data),
        "eps": eps,
        "refine_eps": spec.refine_eps,
        "attack": repr(attack),
        "seconds": seconds,
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "agreement.json").write_text(json.dumps(result, indent=2) + "\n")
    keys = list(next(iter(rows.values())))
    lines = [
        f"bf16 autocast vs fp32: {args.dataset}, {result['model']}, first {len(data)} test images, eps {eps:g}, "
        f"lambda {spec.refine_eps:g}, {attack!r}; {name}, torch {torch.__version__}, {seconds:.0f} s",
        "",
        "| model | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for model_name, row in rows.items():
        cells = [f"{row[k]:.0f}" if k == "samples" else f"{100 * row[k]:.1f}%" for k in keys]
        lines.append(f"| {model_name} | " + " | ".join(cells) + " |")
    (out / "agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
