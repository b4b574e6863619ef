"""``advpnml info``, ``toy``, ``bench`` and ``demo``: what this installation has, the 2-D example, speed, the demo."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..bench.speed import format_table, run_benchmark
from ..demo import run_demo
from ..experiments.toy import run_toy
from ..jobs import describe
from ..runtime import Runtime
from .arguments import (
    Groups,
    command,
    config_args,
    group,
    in_runtime,
    layout_arg,
)


def cmd_bench(args: argparse.Namespace, runtime: Runtime) -> None:
    """``advpnml bench``: speed of the defense and the attacks on this machine."""
    print(
        f"benchmarking on {runtime.device} with {args.threads or torch.get_num_threads()} threads, median of {args.repeats} runs"
    )
    result = run_benchmark(
        args.models.split(",") if args.models else None,
        runtime.device,
        args.threads,
        args.repeats,
        args.batch,
        args.out,
        loops=not args.skip_loops,
        memory_format=runtime.memory_format,
        accel=args.accel,
    )
    print(f"\n{format_table(result)}\n\n{result['seconds']:.0f} s; wrote {args.out}")


def add_commands(sub: argparse._SubParsersAction, g: Groups) -> None:
    """Register info, toy, bench, demo on ``sub`` (the shared argument groups in ``g``)."""
    command(
        sub, "info", lambda a: print(describe(a.data_dir)) or 0, "versions, device, architectures, presets, datasets found"
    ).add_argument("--data-dir", help="folder to look for datasets in")
    p = command(
        sub,
        "toy",
        in_runtime(lambda a, rt: run_toy(a.out, a.config, a.set, rt, a.seed)),
        "the paper's 2-D toy example (Fig. 1): table and probability-surface figure",
        [group(lambda q: config_args(q, "toy2d", False))],
    )
    p.add_argument("--out", default="runs/toy", help="output folder (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="default: %(default)s (a 4-layer MLP: the CPU is fastest)")
    p.add_argument("--seed", type=int, default=0, help="training and attack seed (default: %(default)s)")

    p = command(
        sub,
        "bench",
        in_runtime(cmd_bench),
        "speed of the defense vs its floor and naive loops, top-k, PGD vs torchattacks",
        [g.device],
    )
    p.add_argument("--models", default=None, help="comma-separated: mnist_cnn, preact_resnet18, wrn_28_10, mnist_cnn_100")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement, after one warm-up (default: %(default)s)")
    p.add_argument("--batch", type=int, default=None, help="batch size for every model (default: per model and device)")
    p.add_argument("--skip-loops", action="store_true", help="skip the naive reference loops (a quick re-check)")
    p.add_argument(
        "--accel", action="store_true", help="add FLOPs, TFLOP/s, peak fraction and bf16/channels_last/CUDA-graph rows"
    )
    layout_arg(p, "auto", "; the references use the fastest")
    p.add_argument("--out", default="runs/bench.json", help="JSON output (default: %(default)s)")
    p = command(
        sub,
        "demo",
        in_runtime(lambda a, rt: run_demo(Path(a.out), rt, a.retrain, a.n)),
        "train a small robust MNIST model on the embedded data and evaluate base vs defense",
        [g.device],
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    p.add_argument("--samples", "--n", dest="n", type=int, default=None, help="test samples (default: the mnist5k config's)")
    p.add_argument("--retrain", action="store_true", help="train again even if OUT/model/model.pt exists")
