"""Our whole evaluation of the defense against the reference AutoAttack through it: same images, same run, same machine.

The reference (``pyautoattack``, version standard: APGD-CE, APGD-T, FAB-T, Square, each on what the earlier ones left)
and our strong suite as a cascade (each column on what the earlier ones left, in :func:`advpnml.config.cascade_order`),
both attacking the Adversarial pNML defense end to end. Per attack: its seconds, the seconds so far and the defense's
robust accuracy after it. Summary: each one's final robust accuracy and the seconds it took to reach it (the last
attack that broke a sample), ours to reach the reference's final accuracy, and the ratio. ``--order preset`` runs our
columns in the presets' written order instead (the order before the cascade was sorted by cost), for the before/after.
Our transferred columns attack the base model only on the samples the defense still classifies correctly (base rows
are not evaluated: ``base = false``), so every second counted is spent on the defense.

    python benchmarks/vs_autoattack.py --model official --n 100 --out results/vs_autoattack
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

import advpnml
from advpnml.accel.allocator import tune_cpu_allocator
from advpnml.attacks.autoattack import reference_autoattack
from advpnml.config import from_preset
from advpnml.evaluation.engine import evaluate
from advpnml.evaluation.reporting import environment
from advpnml.runtime import Runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))
from second_order_surrogates import MODELS, load  # noqa: E402  (the models every benchmark here shares)

PRESETS = {"mnist": "mnist", "mnist5k": "mnist5k", "cifar10": "cifar10"}


def reference(
    defended: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, only: list[str] | None = None
) -> list[dict]:
    """The reference standard AutoAttack, one attack at a time on the points the earlier ones left robust (what its
    ``run_standard_evaluation`` does), timed per attack; ``only``: the first of its attacks alone, in its order (a
    budget when the later ones break nothing and only the time to reach the final accuracy is asked)."""
    auto_attack = reference_autoattack()
    with torch.no_grad():
        robust = defended(x).argmax(1) == y
    steps = []
    adversary = auto_attack(defended, device=x.device, eps=eps, norm="Linf", seed=0, version="standard")
    names = list(adversary.attacks_to_run)
    if only is not None:
        if only != names[: len(only)]:
            raise SystemExit(f"--reference-attacks must be the first of {names} in that order, got {only}")
        names = only
    for name in names:
        idx = robust.nonzero().squeeze(1)
        start = time.perf_counter()
        if idx.numel():
            with torch.random.fork_rng():
                adversary.attacks_to_run = [name]
                x_adv, _ = adversary.run_standard_evaluation(x[idx], y[idx], batch_size=len(idx))
            with torch.no_grad():
                robust[idx] = defended(x_adv).argmax(1) == y[idx]
        steps.append({"attack": name, "seconds": time.perf_counter() - start, "robust": robust.float().mean().item()})
        print(f"reference {name:<28} {steps[-1]['seconds']:7.1f} s  {100 * steps[-1]['robust']:5.1f}%", flush=True)
    return steps


def ours(model, data, preset_name: str, eps: float, lam: float, order: str, skip: list[str]) -> list[dict]:
    """Our strong suite through the defense as a cascade, every column ``base = false``; per column its seconds
    (its base-model attack, if transferred, and the defense's) and the defense's robust accuracy after it."""
    preset = from_preset(preset_name)
    only = None
    if order == "preset":  # the written order: the paper's columns, then the strong ones, as before the sort by cost
        runnable = {s.column for s in preset.eval_settings(data.info.name, "test", len(data), suite="strong").attacks}
        written = [e["column"] for e in preset.data["evaluation"]["attacks"] + preset.data["evaluation"]["strong"]]
        only = [c for c in written if c in runnable]
    settings = preset.eval_settings(data.info.name, "test", len(data), eps=eps, refine_eps=lam, suite="strong", only=only)
    specs = [replace(s, base=False) for s in settings.attacks if s.defense is not None and s.column not in skip]
    settings = replace(settings, attacks=specs, cascade=True)
    result = evaluate(model, data, settings, None, Runtime(torch.device("cpu"), progress=False, log=lambda m: None))
    steps, alive = [], result.correct("defense", "Natural").clone()
    for spec in specs:
        seconds = result.timings.get(f"base/{spec.column}", 0.0) + result.timings.get(f"defense/{spec.column}", 0.0)
        column = result.correct("defense", spec.column)
        alive &= column if column is not None else alive
        steps.append({"attack": spec.column, "seconds": seconds, "robust": alive.float().mean().item()})
        print(f"ours      {spec.column:<28} {seconds:7.1f} s  {100 * steps[-1]['robust']:5.1f}%", flush=True)
    return steps


def reached(steps: list[dict], target: float) -> float | None:
    """Seconds until the robust accuracy first reached ``target`` or below (None: never)."""
    total = 0.0
    for step in steps:
        total += step["seconds"]
        if step["robust"] <= target + 1e-9:
            return total
    return None


def prepared(args: argparse.Namespace):
    """The process set up as every benchmark run here is (CPU allocator, ``args.threads`` threads, seed 0), and
    ``args.model`` with its first ``args.n`` test images, eps and lambda."""
    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return load(args.model, args.data_dir, args.n)


def _merge(path: Path, new: dict) -> dict:
    """``path``'s JSON with ``new``'s keys added (or replaced), written back whole: each part's result is kept as soon
    as it exists, and the other part's, run in another process, is not lost."""
    found = json.loads(path.read_text()) if path.exists() else {}
    found.update(new)
    path.write_text(json.dumps(found, indent=2) + "\n")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--model", default="official", choices=sorted(MODELS))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--order", default="cost", choices=("cost", "preset", "both"), help="our cascade's order")
    parser.add_argument("--skip", default="", help="our columns to leave out, comma-separated (e.g. HSJA)")
    parser.add_argument(
        "--part",
        default="both",
        choices=("both", "ours", "reference", "report"),
        help="run only ours or only the reference, added to the JSON already in --out (two processes, one core each); "
        "report: only rewrite the tables from that JSON",
    )
    parser.add_argument(
        "--reference-attacks", default=None, help="the reference's first attacks alone, e.g. apgd-ce,apgd-t (default: all)"
    )
    parser.add_argument("--label", default=None, help="the name of our run in the tables (default: its order)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: two parts can run side by side)")
    parser.add_argument("--out", default="results/vs_autoattack")
    args = parser.parse_args()
    model, data, eps, lam = prepared(args)
    dataset = MODELS[args.model][2]
    skip = [c for c in args.skip.split(",") if c]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{args.model}_n{len(data)}" + (f"_without_{'_'.join(s.replace(' ', '-') for s in skip)}" if skip else "")
    found = _merge(out / f"{name}.json", {"model": args.model, "eps": eps, "lambda": lam, "samples": len(data)})
    if args.part in ("both", "ours"):
        for order in ("cost", "preset") if args.order == "both" else (args.order,):
            steps = ours(model, data, PRESETS[dataset], eps, lam, order, skip)
            label = args.label or f"{order} order"
            found = _merge(out / f"{name}.json", {f"ours ({label})": steps, f"environment ({label})": environment()})
    if args.part in ("both", "reference"):
        defended = advpnml.AdversarialPnml(model, lam).eval()
        only = args.reference_attacks.split(",") if args.reference_attacks else None
        steps = reference(defended, data.x, data.y, eps, only)
        found = _merge(out / f"{name}.json", {"reference": steps, "environment (reference)": environment()})
    lines = [
        f"# {args.model}, eps {eps:.4g}, lambda {lam:g}, {len(data)} images; "
        + "; ".join(
            sorted(
                {
                    f"{v.get('processor')} CPU, {v.get('cpu_threads')} thread(s), torch {v.get('torch')}"
                    for k, v in found.items()
                    if k.startswith("environment")
                }
            )
        ),
        "",
        "| run | attack | seconds | seconds so far | defense robust after |",
        "|---|---|---|---|---|",
    ]
    summary = ["", "| run | final robust | seconds to reach it | seconds in all | seconds to reach the reference's final |"]
    summary.append("|---|---|---|---|---|")
    target = found["reference"][-1]["robust"] if "reference" in found else None
    for run, steps in found.items():
        if not isinstance(steps, list):
            continue
        total = 0.0
        for step in steps:
            total += step["seconds"]
            lines.append(f"| {run} | {step['attack']} | {step['seconds']:.1f} | {total:.1f} | {100 * step['robust']:.1f}% |")
        final = steps[-1]["robust"]
        to_target = reached(steps, target) if target is not None else None
        summary.append(
            f"| {run} | {100 * final:.1f}% | {reached(steps, final):.1f} | {total:.1f} | "
            + ("-" if to_target is None else f"{to_target:.1f}")
            + " |"
        )
    if target is not None:
        ref_time = reached(found["reference"], target)
        for run, steps in found.items():
            if isinstance(steps, list) and run != "reference":
                mine = reached(steps, target)
                if mine is None:
                    summary.append(f"\n{run}: never reaches the reference's final accuracy ({100 * target:.1f}%)")
                else:
                    summary.append(f"\n{run}: reaches the reference's final accuracy {ref_time / mine:.2f}x as fast")
                common = max(target, steps[-1]["robust"])  # the accuracy both reach
                ref_common, mine = reached(found["reference"], common), reached(steps, common)
                summary.append(
                    f"{run}: both reach {100 * common:.1f}%, the reference in {ref_common:.1f} s, ours in {mine:.1f} s "
                    f"({ref_common / mine:.2f}x as fast)"
                )
    (out / f"{name}.md").write_text("\n".join(lines + summary) + "\n")
    print("\n".join(lines + summary))


if __name__ == "__main__":
    main()
