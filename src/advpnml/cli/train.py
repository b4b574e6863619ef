"""``advpnml train``: a model by a preset's recipe, resumable."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import from_preset
from ..data import load_dataset
from ..runtime import Runtime
from ..training.trainer import TrainConfig, train
from .arguments import (
    Groups,
    command,
    in_runtime,
    layout_arg,
)


def cmd_train(args: argparse.Namespace, runtime: Runtime) -> None:
    """``advpnml train``: train a model by the config's recipe into ``--out``."""
    preset = from_preset(args.config, args.set)
    config = TrainConfig.from_preset(preset, method=args.method, epochs=args.epochs, seed=args.seed)
    name = args.dataset or preset.dataset or "mnist5k"
    train_set = load_dataset(name, args.split, args.data_dir, args.download, args.n)
    val_set = load_dataset(name, "test", args.data_dir, args.download, args.val_n)
    out = Path(args.out or f"runs/train-{name}-{config.method}")
    runtime.log(f"training {config.arch} with {config.method} on {name} ({len(train_set)} samples{runtime.processes}) -> {out}")
    start = time.perf_counter()
    _, history = train(
        config,
        train_set,
        out,
        val_set,
        runtime,
        args.resume,
        dataset_name=name,
        time_limit=60 * args.time_limit if args.time_limit else None,
    )
    model_file = out / ("model.pt" if len(history) == config.epochs else "last.pt")
    runtime.log(f"done in {time.perf_counter() - start:.0f} s: {model_file}, {out / 'metrics.csv'}, {out / 'metrics.png'}")


def add_commands(sub: argparse._SubParsersAction, g: Groups) -> None:
    """Register train on ``sub`` (the shared argument groups in ``g``)."""
    p = command(
        sub, "train", in_runtime(cmd_train), "standard, PGD or fast adversarial training (resumable)", [g.config, g.train_data]
    )
    p.add_argument("--method", choices=("standard", "pgd", "fast"), default=None, help="default: the config's")
    for flag in ("--epochs", "--seed"):
        p.add_argument(flag, type=int, default=None, help="default: the config's")
    p.add_argument("--val-n", type=int, default=1000, help="held-out samples for the final validation")
    p.add_argument("--out", default=None, help="output folder (checkpoints, metrics.csv, metrics.png)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="MINUTES",
        help="stop before an epoch that would end past this many minutes; --resume continues",
    )
    layout_arg(p, "contiguous", " (auto trains ~1.2x faster on CPU, but not the model results/ records)")
    p.add_argument("--cuda-graphs", action="store_true", help="capture each PGD-training step as one CUDA graph (same values)")
