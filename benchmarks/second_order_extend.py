"""Do new columns move a published worst case? Run them on the samples a published table left robust.

A table's per-sample worst case can only fall on the samples every earlier attack left correct, so the new columns run
there alone, as a cascade continued from the published records, and the new worst case is the old one intersected
with theirs: ``--family second-order`` (:mod:`advpnml.defense.second_order`, the straight clip, issue 27) or
``--family exact-clip`` (margin PGD and APGD-CE through the defense with the refinement's clip differentiated
exactly, then the second-order ones with it: the strong suite's new columns, issue 34). Writes ``extend.md`` and
``extend.json`` to --out.

    python benchmarks/second_order_extend.py --records results/cifar10_resnet4b_cpu --source abcrown_resnet4b \
        --checkpoint ../shared/data/weights/abcrown_cifar10_resnet4b/resnet4b.pth --data-dir ../shared/data/cifar10 \
        --out results/cifar10_resnet4b_second_order
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import advpnml
from advpnml.accel.allocator import tune_cpu_allocator
from advpnml.config import AttackSpec, EvalSettings
from advpnml.data import InfoSubset
from advpnml.evaluation.engine import evaluate
from advpnml.evaluation.records import EvalResult, scan_records
from advpnml.runtime import Runtime


def _published(path: Path) -> EvalResult:
    header = json.loads((path / "records.jsonl").read_text().splitlines()[0])
    settings = EvalSettings.from_stored(header["settings"])  # options added since at the values that run had
    scan = scan_records(path / "records.jsonl", settings, header.get("identity"))
    return EvalResult(settings, [scan.done[i] for i in sorted(scan.done)], {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", required=True, help="a published run's folder (records.jsonl)")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--source", default=None)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--targets", type=int, default=3, help="APGD-T 2nd-order's targets (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--first", type=int, default=None, help="only the published table's first N samples (a CPU budget)")
    parser.add_argument("--family", default="second-order", choices=("second-order", "exact-clip"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    tune_cpu_allocator()
    published = _published(Path(args.records))
    old = published.settings
    records, robust = published.records, published.robust("defense").tolist()
    if args.first is not None:
        if args.first < 1:
            raise SystemExit(f"--first must be at least 1, got {args.first}")
        kept = [i for i, r in enumerate(records) if r["index"] < args.first]
        records, robust = [records[i] for i in kept], [robust[i] for i in kept]
    survivors = [r["index"] for r, ok in zip(records, robust) if ok]
    model = advpnml.load_external(args.checkpoint, args.source) if args.source else advpnml.load_checkpoint(args.checkpoint)[0]
    dataset = advpnml.load_dataset(old.dataset, old.split, args.data_dir, n=old.n)
    step = 2.5 * old.eps / args.steps
    clip = {"clip": "exact"} if args.family == "exact-clip" else {}
    first_order = [
        AttackSpec(
            "Adaptive-margin exact-clip",
            "pgd",
            {"steps": args.steps, "step_size": step, "restarts": 1, "early_stop": "steps", "loss": "margin", **clip},
            base=False,
        ),
        AttackSpec("APGD-CE exact-clip", "apgd", {"steps": args.steps, "loss": "ce", **clip}, base=False),
    ]
    columns = [
        AttackSpec(
            "Adaptive-margin 2nd-order",
            "pgd",
            {
                "steps": args.steps,
                "step_size": step,
                "restarts": 1,
                "early_stop": "steps",
                "loss": "margin",
                "backward": "second-order-tanh",
                **clip,
            },
            base=False,
        ),
        AttackSpec(
            "APGD-CE 2nd-order", "apgd", {"steps": args.steps, "loss": "ce", "backward": "second-order-tanh", **clip}, base=False
        ),
        AttackSpec(
            "APGD-T 2nd-order",
            "apgd-t",
            {"steps": args.steps, "n_targets": args.targets, "backward": "second-order-tanh", **clip},
            base=False,
        ),
    ]
    if args.family == "exact-clip":
        columns = first_order + columns
    settings = replace(old, n=len(survivors), attacks=columns, cascade=True, batch_size=args.batch_size)
    start = time.perf_counter()
    out = Path(args.out)
    result = evaluate(model, InfoSubset(dataset, survivors), settings, out, Runtime(progress=False))
    seconds = time.perf_counter() - start
    still = result.robust("defense")
    before, n = len(survivors), len(records)
    summary = {
        "published": args.records,
        "samples": n,
        "defense_worst_before": before / n,
        "defense_worst_after": int(still.sum()) / n,
        "survivors_attacked": before,
        "family": args.family,
        "broken_by_the_new_columns": before - int(still.sum()),
        "columns_on_survivors": {c: a for c, a in result.accuracy()["defense"].items() if a is not None},
        "seconds": seconds,
        "timings_s": result.timings,
        "eps": old.eps,
        "lambda": old.refine_eps,
        "steps": args.steps,
        "apgd_t_targets": args.targets,
    }
    (out / "extend.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# {args.family} attacks on the survivors of {args.records}",
        "",
        f"{n} samples, eps {old.eps:.4g}, lambda {old.refine_eps:g}; the published defense worst case left {before} "
        f"robust ({100 * before / n:.1f}%). On those, a cascade through the defense of "
        + (f"margin PGD-{args.steps} and APGD-CE-{args.steps} with the exact clip, then " if args.family == "exact-clip" else "")
        + f"margin PGD-{args.steps}, APGD-CE-{args.steps} and APGD-T-{args.steps} ({args.targets} targets) differentiated "
        f"through the refinement (second-order, tanh surrogate{', exact clip' if clip else ''}), {seconds:.0f} s on this machine:",
        "",
        "| column (cascade, on the survivors) | robust |",
        "|---|---|",
    ]
    lines += [f"| {c} | {100 * a:.1f}% |" for c, a in summary["columns_on_survivors"].items()]
    lines += [
        "",
        f"Defense worst case: {100 * before / n:.1f}% published, {100 * int(still.sum()) / n:.1f}% with these "
        f"attacks ({before - int(still.sum())} more samples broken).",
    ]
    (out / "extend.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
