"""Seconds per epoch of the paper's MNIST recipe, eager vs one CUDA graph per step (issue 18), and the whole recipe projected.

The recipe is the ``mnist`` preset's training (Madry CNN, batch 50, PGD 40 x 0.01 at eps 0.3, SGD 0.01, the last
6 of 106 epochs against the adaptive attack through the defense). Each run trains from scratch on the first
``--samples`` training images for one epoch (a PGD epoch, or an adaptive one) and its time is scaled to 60,000
images; the graphed PGD run does two epochs so its second shows the pace after capture.

    python benchmarks/train_speed.py --data-dir .devdata --device cuda --out results/gpu_train_speed
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from advpnml.config import from_preset
from advpnml.data import load_dataset
from advpnml.runtime import Runtime
from advpnml.training.trainer import TrainConfig, train

FULL = 60_000


def epoch_seconds(
    base: TrainConfig, samples: int, graphs: bool, adaptive: bool, epochs: int, data_dir: str | None, device: str, log
) -> dict:
    """Train ``epochs`` epochs (all adaptive if ``adaptive``) on ``samples`` images; seconds of each epoch."""
    config = replace(base, epochs=epochs, adaptive_epochs=epochs if adaptive else 0)
    data = load_dataset("mnist", "train", data_dir, False, samples)
    runtime = Runtime(device=torch.device(device), memory_format="contiguous", log=log, progress=False, cuda_graphs=graphs)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        _, history = train(config, data, out, runtime=runtime)
    seconds = [h["seconds"] for h in history]
    return {
        "samples": len(data),
        "graphs": graphs,
        "adaptive": adaptive,
        "epoch_seconds": seconds,
        "per_full_epoch_s": seconds[-1] * FULL / len(data),
        "wall_s": time.perf_counter() - start,
        "train_adv_acc": history[-1]["train_adv_acc"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cuda")
    p.add_argument("--eager-samples", type=int, default=12_000, help="images of the eager PGD epoch (default: %(default)s)")
    p.add_argument("--graph-samples", type=int, default=FULL, help="images of the graphed PGD epochs (default: %(default)s)")
    p.add_argument("--adaptive-samples", type=int, default=6_000, help="images of each adaptive epoch (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="PGD steps (default: the recipe's 40; fewer only for a dry run)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    base = TrainConfig.from_preset(from_preset("mnist"), attack_steps=args.steps)
    runs = {}
    for name, samples, graphs, adaptive, epochs in [
        ("eager_pgd", args.eager_samples, False, False, 1),
        ("graph_pgd", args.graph_samples, True, False, 2),
        ("graph_adaptive", args.adaptive_samples, True, True, 1),
        ("eager_adaptive", args.adaptive_samples, False, True, 1),
    ]:
        runs[name] = epoch_seconds(base, samples, graphs, adaptive, epochs, args.data_dir, args.device, print)
        print(
            f"{name}: {runs[name]['epoch_seconds']} s on {samples} images -> {runs[name]['per_full_epoch_s']:.1f} s per "
            f"60,000-image epoch"
        )
    pgd_epochs = base.epochs - base.adaptive_epochs
    recipe = {
        mode: pgd_epochs * runs[f"{mode}_pgd"]["per_full_epoch_s"]
        + base.adaptive_epochs * runs[f"{mode}_adaptive"]["per_full_epoch_s"]
        for mode in ("eager", "graph")
    }
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    result = {
        "device": name,
        "torch": torch.__version__,
        "recipe": {
            "epochs": base.epochs,
            "adaptive_epochs": base.adaptive_epochs,
            "batch_size": base.batch_size,
            "attack_steps": base.attack_steps,
        },
        "runs": runs,
        "pgd_epoch_speedup": runs["eager_pgd"]["per_full_epoch_s"] / runs["graph_pgd"]["per_full_epoch_s"],
        "recipe_minutes": {mode: s / 60 for mode, s in recipe.items()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{name}: PGD epoch {runs['eager_pgd']['per_full_epoch_s']:.1f} s eager -> {runs['graph_pgd']['per_full_epoch_s']:.1f} s "
        f"graphed ({result['pgd_epoch_speedup']:.1f}x); adaptive epoch {runs['eager_adaptive']['per_full_epoch_s']:.1f} -> "
        f"{runs['graph_adaptive']['per_full_epoch_s']:.1f} s; the {base.epochs}-epoch recipe: {result['recipe_minutes']['eager']:.0f} "
        f"min eager, {result['recipe_minutes']['graph']:.1f} min graphed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
