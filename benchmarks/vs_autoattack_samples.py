"""Which samples each side breaks: the reference AutoAttack's APGD-CE and APGD-T through the defense, or our columns.

The companion of ``vs_autoattack.py``, whose tables count samples: this one names them, so a difference between the two
final accuracies can be traced to the samples behind it. ``--part reference`` runs ``pyautoattack``'s APGD-CE then
APGD-T (its standard budgets) on every image; ``--part ours`` runs our strong suite's ``--columns`` through the defense
as a cascade (every column ``base = false``) and lists, per column, the samples it was the first to break.

    python benchmarks/vs_autoattack_samples.py --part reference --out results/vs_autoattack
    python benchmarks/vs_autoattack_samples.py --part ours --out results/vs_autoattack \\
        --columns "FGSM,PGD,APGD-CE,APGD-T,Adaptive,Adaptive-margin,APGD-CE adaptive,Joint hypotheses,APGD-T adaptive"
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
from advpnml.attacks.autoattack import reference_autoattack
from advpnml.config import from_preset
from advpnml.evaluation.engine import evaluate
from advpnml.runtime import Runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))
from second_order_surrogates import MODELS  # noqa: E402
from vs_autoattack import PRESETS, prepared  # noqa: E402


def reference_samples(defended: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict:
    """Per sample, whether the reference's APGD-CE then APGD-T (on what APGD-CE left) leave it robust."""
    adversary = reference_autoattack()(defended, device=x.device, eps=eps, norm="Linf", seed=0, version="standard")
    adversary.attacks_to_run = ["apgd-ce", "apgd-t"]
    start = time.perf_counter()
    x_adv = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    x_adv = x_adv[0] if isinstance(x_adv, tuple) else x_adv
    with torch.no_grad():
        robust = defended(x_adv).argmax(1) == y
    return {"seconds": time.perf_counter() - start, "robust": robust.tolist()}


def our_samples(model, data, preset_name: str, eps: float, lam: float, columns: list[str]) -> dict:
    """Per sample, whether our cascade of ``columns`` through the defense leaves it robust, and which column broke it."""
    preset = from_preset(preset_name)
    settings = preset.eval_settings(data.info.name, "test", len(data), eps=eps, refine_eps=lam, suite="strong", only=columns)
    specs = [replace(s, base=False) for s in settings.attacks if s.defense is not None]
    settings = replace(settings, attacks=specs, cascade=True)
    start = time.perf_counter()
    result = evaluate(model, data, settings, None, Runtime(torch.device("cpu"), progress=False, log=lambda m: None))
    alive = result.correct("defense", "Natural").clone()
    first_broken: dict[str, list[int]] = {}
    for spec in specs:
        before = alive.clone()
        alive &= result.correct("defense", spec.column)
        first_broken[spec.column] = (before & ~alive).nonzero().squeeze(1).tolist()
    return {"seconds": time.perf_counter() - start, "robust": alive.tolist(), "first_broken_by": first_broken}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--model", default="official", choices=sorted(MODELS))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--part", required=True, choices=("ours", "reference"))
    parser.add_argument("--columns", default="FGSM,PGD,APGD-CE,APGD-T,APGD-T adaptive", help="ours: the columns, in order")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="results/vs_autoattack")
    args = parser.parse_args()
    model, data, eps, lam = prepared(args)
    if args.part == "reference":
        found = reference_samples(advpnml.AdversarialPnml(model, lam).eval(), data.x, data.y, eps)
    else:
        columns = [c.strip() for c in args.columns.split(",") if c.strip()]
        found = our_samples(model, data, PRESETS[MODELS[args.model][2]], eps, lam, columns)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.model}_n{len(data)}_samples_{args.part}.json"
    path.write_text(json.dumps({"model": args.model, "eps": eps, "lambda": lam, **found}, indent=1) + "\n")
    print(f"{args.part}: {sum(found['robust'])} of {len(data)} robust, {found['seconds']:.0f} s -> {path}")


if __name__ == "__main__":
    main()
