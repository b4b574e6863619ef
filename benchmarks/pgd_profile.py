"""Where PGD-10's time goes, ours against torchattacks, on one of the benchmark's models.

    python benchmarks/pgd_profile.py --device cuda --models mnist_cnn,wrn_28_10 --out results/pgd_profile.json

For each attack: wall time per call (median of interleaved repeats), operators dispatched per call,
the busy time of one profiled call (on a GPU the sum of kernel times, so idle gaps are the rest of
the wall time; on a CPU the operators' self-times, inflated by the profiler) and the most expensive
kernels or operators. When ``advpnml bench`` shows a throughput gap, this says whether it is
kernels (busy time differs), launches (operator counts) or host-side stalls (busy time equal, wall
time not). Same settings as the bench's PGD columns: eps 8/255,
step 2/255, random start, the last iterate (``keep_best=False``: torchattacks' semantics).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from advpnml.accel.allocator import tune_cpu_allocator
from advpnml.bench.speed import CASES, dispatched_ops, measure_rounds, pgd_contenders, random_case
from advpnml.models import resolve_memory_format, set_memory_format


def _costs(prof, device: torch.device) -> list[tuple[str, int, float]]:
    """(name, calls, self-time in us) of what did the work: on CPU the aten operators, on a GPU the
    kernels (device events; where a build attributes kernel time only to the launching operator,
    those operators' self device times, which do not overlap either)."""
    averages = prof.key_averages()
    if device.type == "cpu":
        return [
            (e.key, e.count, e.self_cpu_time_total) for e in averages if e.key.startswith("aten::") and e.self_cpu_time_total > 0
        ]
    kernels = [e for e in averages if e.device_type != DeviceType.CPU and e.self_device_time_total > 0]
    kernels = kernels or [e for e in averages if e.self_device_time_total > 0]
    return [(e.key, e.count, e.self_device_time_total) for e in kernels]


def profile_attack(fn, device: torch.device, top: int) -> dict:
    """One profiled call of ``fn`` (after a warm-up): busy time, operators and the top kernels."""
    fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    costs = sorted(_costs(prof, device), key=lambda c: -c[2])
    return {
        "busy_ms": 1e-3 * sum(c[2] for c in costs),
        "ops_per_call": dispatched_ops(fn),
        "top": [{"name": name[:80], "calls": calls, "ms": 1e-3 * us} for name, calls, us in costs[:top]],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="mnist_cnn", help=f"comma-separated, from: {', '.join(CASES)}")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="default: the bench's batch for the device")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--out", default=None, help="JSON output")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    tune_cpu_allocator()  # as the CLI does
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "rows": [],
    }
    for name in args.models.split(","):
        arch, kwargs, shape, cpu_batch, gpu_batch = CASES[name]
        batch = args.batch or (gpu_batch if device.type == "cuda" else cpu_batch)
        model, x = random_case(arch, kwargs, shape, batch, device)
        set_memory_format(model, resolve_memory_format(model, device, "auto"))
        fns = pgd_contenders(model, x, args.steps)
        if "torchattacks" not in fns:
            print("torchattacks not installed: ours only", file=sys.stderr)
        walls = measure_rounds(fns, device, args.repeats)  # interleaved: both see the same machine state
        row = {
            "model": name,
            "batch": batch,
            "steps": args.steps,
            **{k: {"wall_ms": 1e3 * walls[k], **profile_attack(f, device, args.top)} for k, f in fns.items()},
        }
        result["rows"].append(row)
        print(f"\n{name}, batch {batch}, PGD-{args.steps} on {result['device']}")
        for k in fns:
            r = row[k]
            print(f"  {k:>12}: wall {r['wall_ms']:.2f} ms, busy {r['busy_ms']:.2f} ms, {r['ops_per_call']} ops")
            for t in r["top"]:
                print(f"      {t['ms']:8.2f} ms  {t['calls']:5d} x  {t['name']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
