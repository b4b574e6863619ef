"""Test-time defenses side by side (``advpnml reproduce defenses``): every registry defense around every model we
ship, each an ordinary resumable evaluation (the strong suite, the per-sample worst case, the masking checklist),
then one table, one figure and the logs.

Per model and defense the table reads: clean accuracy; the number the defense's own paper would print, under the
attack its paper used (:data:`CLAIMED_STYLE`); the worst case over the transferred attacks, the first-order adaptive
ones, the second-order ones, the black-box ones and all of them; the base model's worst case beside it; and the
inference cost in passes and measured milliseconds per image. Croce et al. (ICML 2022) laid their nine defenses out
this way. Budgets cut to fit a CPU (``--set``) make every robust number an upper bound, and the table says so.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..config import DEFENSE_NAMES, from_preset
from ..evaluation.records import EvalResult
from ..evaluation.reporting import DEFENSE_ROW_NAMES, defense_passes, pct, robustness_summary
from ..jobs import evaluate_and_report, load_run
from ..plotting import pyplot, save_figure, write_atomic
from ..runtime import Runtime

#: The models we ship to compare on: name -> (source, checkpoint under the data folder's ``weights/`` or, for
#: ``checkpoint``, a path of this repository), dataset, eps, preset, lambda.
SHIPPED: dict[str, tuple[str, str | None, str, float, str, float]] = {
    "lenet5": ("advertorch_lenet5", "advertorch_mnist_lenet5/mnist_lenet5_advtrained.pt", "mnist", 0.3, "mnist", 0.1),
    "demo": ("checkpoint", "runs/demo/model/model.pt", "mnist5k", 0.3, "mnist5k", 0.1),
    "resnet4b": ("abcrown_resnet4b", "abcrown_cifar10_resnet4b/resnet4b.pth", "cifar10", 2 / 255, "cifar10", 0.0076),
    "convex_small": ("convex_small", "convex_cifar10_small_8px/cifar_small_8px.pth", "cifar10", 8 / 255, "cifar10", 0.03),
}

#: The column whose number each defense's paper printed: the attack it was evaluated with. The pNML paper and Hedge
#: (Wu et al. 2021; Croce et al.'s "non-adaptive" row) attacked the base model and scored the defense on the result;
#: the anti-adversary's and TTE's papers ran AutoAttack on the defended model as it is, whose autograd passes the
#: gradient straight through the anti-adversary's detached steps (an identity BPDA) and through TTE's views.
CLAIMED_STYLE = {"pnml": "PGD", "hedge": "APGD-T", "anti-adversary": "APGD-CE adaptive", "tte": "APGD-CE adaptive"}


def families(result: EvalResult) -> dict[str, float | None]:
    """The defense row's worst case per family of attacks: transfer, adaptive (first order), second-order, black-box
    and all, with the base model's worst case and the claimed-style column."""
    summary = robustness_summary(result)
    second = [s.column for s in result.settings.attacks if str(s.params.get("backward", "")).startswith("second-order")]
    first = [
        s.column
        for s in result.settings.attacks
        if s.defense == "direct" and s.attack not in ("square", "hsja", "autoattack") and s.column not in second
    ]

    def worst(columns: list[str]) -> float | None:
        ran = [c for c in columns if result.correct("defense", c) is not None]
        return result.robust_over("defense", ran).float().mean().item() if ran else None

    claimed = CLAIMED_STYLE.get(result.settings.defense_name)
    accuracy = result.accuracy()["defense"]
    return {
        "clean": summary["defense"]["clean"],
        "claimed-style": accuracy.get(claimed) if claimed else None,
        "transfer": summary["defense"]["transfer"],
        "adaptive": worst(first),
        "second-order": worst(second),
        "black-box": summary["defense"]["black-box"],
        "worst case": summary["defense"]["worst case"],
        "base worst case": summary["base"]["worst case"],
    }


def compare_defenses(
    models: list[str],
    defenses: list[str],
    out: str | os.PathLike,
    runtime: Runtime,
    *,
    data_dir: str | os.PathLike,
    n: int = 100,
    overrides: list[str] | None = None,
    attacks: list[str] | None = None,
    cascade: bool = True,
    checks: int = 20,
    resume: bool = True,
    step_rule: bool = False,
    collect: bool = False,
) -> Path:
    """Evaluate each of ``defenses`` around each of ``models`` (:data:`SHIPPED`) on its dataset's first ``n`` test
    images into ``out/MODEL/DEFENSE`` (resumable), then write ``out/defenses.md``, ``.json`` and ``.png``.
    ``overrides``: ``--set`` changes (budgets cut to fit the machine: the table then calls its numbers upper bounds).
    ``step_rule``: every PGD-type column (PGD, the adaptive PGDs, joint hypotheses) steps ``2.5 * eps / steps`` at
    each model's own eps (Madry et al.'s rule, as :func:`advpnml.config.generic_preset`), so models at different
    radii share one command. ``collect``: attack nothing; read each finished run in ``out`` (its records, its checks),
    rewrite its report and build the table (a run missing or unfinished there is a one-line error)."""
    unknown = [m for m in models if m not in SHIPPED] + [d for d in defenses if d not in DEFENSE_NAMES]
    if unknown:
        raise ValueError(
            f"unknown model or defense {unknown}; models: {', '.join(SHIPPED)}; defenses: {', '.join(DEFENSE_NAMES)}"
        )
    out = Path(out)
    root = Path(data_dir)
    setups: list[tuple[str, str, Callable[[], Any]]] = []
    for name in models:
        source, weights, dataset, eps, preset_name, lam = SHIPPED[name]
        preset = from_preset(preset_name, overrides)
        if step_rule:
            preset = from_preset(preset_name, [*(overrides or []), *_step_rule(preset, eps)])
        checkpoint = weights if source == "checkpoint" else str(root / "weights" / weights) if weights else None
        for defense in defenses:

            def load(preset=preset, checkpoint=checkpoint, source=source, dataset=dataset, eps=eps, lam=lam, defense=defense):
                return load_run(
                    preset,
                    checkpoint,
                    None if source == "checkpoint" else source,
                    dataset=dataset,
                    data_dir=str(root / ("mnist" if dataset == "mnist" else "cifar10")) if dataset != "mnist5k" else None,
                    n=n,
                    eps=eps,
                    refine_eps=lam,
                    only=[a for a in attacks if _has(preset, a, defense)] if attacks else None,
                    suite="strong",
                    cascade=cascade,
                    defense=defense,
                )

            setups.append((name, defense, load))
    runs = [(name, defense, load()) for name, defense, load in setups]  # every bad argument before any attack
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    for name, defense, run in runs:
        folder = out / name / defense
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / "run.log"
        lines: list[str] = []

        def log(message: str, lines: list[str] = lines) -> None:
            lines.append(message)
            runtime.log(message)

        start = time.perf_counter()
        result: EvalResult | None
        if collect:
            result = _finished(run, folder)
        else:
            result = evaluate_and_report(run, folder, replace(runtime, log=log), resume=resume, checks=checks)
            write_atomic(log_path, ("\n".join(lines) + "\n").encode())
        if result is None:
            missing.append(f"{name} / {defense}")
            continue
        timing_path = folder / "timing.json"  # the run that computed the samples; a resumed one keeps its time
        if not collect and (result.samples_timed == len(result.records) or not timing_path.exists()):
            first = {"seconds": time.perf_counter() - start, "samples_timed": result.samples_timed}
            write_atomic(timing_path, (json.dumps(first, indent=2) + "\n").encode())
        took: dict[str, Any] = json.loads(timing_path.read_text()) if timing_path.exists() else {"seconds": None}
        rows.append(
            {
                "model": name,
                "defense": defense,
                "samples": len(result.records),
                "eps": result.settings.eps,
                "parameters": result.settings.defense_params or {"lambda": result.settings.refine_eps},
                "seconds": took["seconds"],
                "ms_per_image": inference_ms(run),
                "passes": defense_passes(defense, result.settings.defense_params)
                if defense != "pnml"
                else "1 forward + C input-gradient backwards (VJPs of it) + C forwards",
                "other_settings": run.settings.changes_from(asdict(result.settings)),
                **families(result),
            }
        )
    if collect and not rows:
        raise ValueError(f"no finished run in {out}: run the comparison first (without --collect)")
    return _write(rows, out, overrides or [], n, missing)


def _finished(run: Any, folder: Path) -> EvalResult | None:
    """The finished run in ``folder`` as its records and results.json hold it, under the settings it ran with (its
    records' header: a run of other settings than ``run``'s is read as it ran, and the table names what differs), its
    report rewritten (the defense's name in the title, the pNML paper's numbers beside the pNML only, at the run's own
    dataset and eps) with the checks it ran; None when it is not finished there."""
    from ..evaluation.masking import Check
    from ..evaluation.records import read_all_records, recorded_settings
    from ..evaluation.reporting import write_report

    ran = recorded_settings(folder)
    if ran is None or ran.n != len(run.dataset) or not (folder / "results.json").exists():
        return None
    done = read_all_records(folder, ran)
    if len(done) < len(run.dataset):
        return None
    written = json.loads((folder / "results.json").read_text())
    result = EvalResult(ran, [done[i] for i in range(len(run.dataset))], written.get("timings_s", {}), 0)
    result.checks = [Check(**c) for c in written.get("masking_checks", [])]
    paper = run.preset.paper_numbers(ran.dataset, ran.eps) if ran.defense_name == "pnml" else None
    write_report(result, folder, paper=paper, checks=result.checks)
    return result


def _step_rule(preset: Any, eps: float) -> list[str]:
    """``COLUMN.step_size=2.5*eps/steps`` for each PGD-type column of ``preset``'s strong suite."""
    return [
        f"{s.column}.step_size={2.5 * eps / int(s.params.get('steps', 100))!r}"
        for s in preset.attacks(suite="strong")
        if s.attack in ("pgd", "joint")
    ]


def _has(preset: Any, column: str, defense: str) -> bool:
    """Whether ``column`` is in the strong suite a ``defense`` can run (a list for all defenses keeps each one's own)."""
    return column.strip().lower() in {
        s.column.lower() for s in preset.eval_settings("", "test", 1, suite="strong", defense=defense).attacks
    }


def inference_ms(run: Any, samples: int = 100, repeats: int = 3) -> float:
    """Milliseconds per image of the defense's prediction on the run's first ``samples`` images, measured here (after
    one warm-up call), so a resumed run reports its cost too: the fastest of ``repeats`` passes, as ``timeit`` reports
    (a slower pass measures the machine's other work, not the defense)."""
    import torch

    from ..defense import create_defense

    settings = run.settings
    defense = run.defense or create_defense(
        settings.defense_name, run.model.eval(), settings.defense_params, settings.defense, run.dataset.info.bounds
    )
    x = torch.stack([run.dataset[i][0] for i in range(min(samples, len(run.dataset)))])
    passes = []
    with torch.no_grad():
        defense(x[:4])
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(0, len(x), settings.batch_size):
                defense(x[i : i + settings.batch_size])
            passes.append(time.perf_counter() - start)
    return 1e3 * min(passes) / len(x)


_COLUMNS = ("clean", "claimed-style", "transfer", "adaptive", "second-order", "black-box", "worst case", "base worst case")


def _write(rows: list[dict[str, Any]], out: Path, overrides: list[str], n: int, missing: list[str]) -> Path:
    """``defenses.md`` (the table), ``defenses.json`` (every number) and ``defenses.png``/``.pdf`` (the worst cases)."""
    from ..evaluation.reporting import environment
    from ..version import __version__

    env = environment()
    hardware = env.get("cuda") or f"CPU ({env.get('processor')}, {env.get('cpu_threads')} threads)"
    cut = f"budgets cut with --set {' '.join(overrides)}: every robust number is an upper bound" if overrides else "full budgets"
    md = [
        "# Test-time defenses side by side",
        "",
        f"{hardware}, torch {env.get('torch')}, "
        f"advpnml {__version__}; first {n} test images "
        f"of each model's dataset; the strong suite as a cascade; {cut}.",
        "",
        "| model | defense | parameters | " + " | ".join(_COLUMNS) + " | inference | ms / forward | run (s) |",
        "|---|---|---|" + "---|" * (len(_COLUMNS) + 3),
    ]
    for r in rows:
        params = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["parameters"].items())
        ms = "-" if r["ms_per_image"] is None else f"{r['ms_per_image']:.1f}"
        md.append(
            f"| {r['model']} (eps {r['eps']:.4g}) | {DEFENSE_ROW_NAMES.get(r['defense'], r['defense'])} | {params} | "
            + " | ".join(pct(r[c]) for c in _COLUMNS)
            + f" | {r['passes']} | {ms} | {_seconds(r['seconds'])} |"
        )
    if missing:
        md += ["", f"Not in the table (not run to the end in {out}): {', '.join(missing)}."]
    other: dict[str, list[str]] = {}  # the same changes, one line for every row that ran with them
    for r in rows:
        if r.get("other_settings"):
            other.setdefault("; ".join(r["other_settings"]), []).append(
                f"{r['model']} / {DEFENSE_ROW_NAMES.get(r['defense'], r['defense'])}"
            )
    if other:
        md += ["", "Rows run with other settings than this command's, each as it ran (the run's -> the command's):"]
        md += [f"- {', '.join(names)}: {changes}" for changes, names in other.items()]
    md += [
        "",
        "claimed-style: the column the defense's paper reported (pNML: PGD on the base model, transferred; Hedge: APGD-T "
        "on the base model, transferred; anti-adversary and TTE: APGD-CE through the defense's own autograd). "
        "second-order: the refinement differentiated through its gradient. A cascade runs each attack on what the "
        "earlier ones left, so a family's number is an upper bound on that family alone; the worst case is exact.",
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "defenses.md", ("\n".join(md) + "\n").encode())
    write_atomic(
        out / "defenses.json", (json.dumps({"environment": env, "overrides": overrides, "rows": rows}, indent=2) + "\n").encode()
    )
    if rows:
        _plot(rows, out / "defenses")
    return out / "defenses.md"


def _seconds(value: float | None) -> str:
    """A run's seconds in the table ("-" where no run that computed its samples recorded them)."""
    return "-" if value is None else f"{value:.0f}"


def _plot(rows: list[dict[str, Any]], stem: Path) -> None:
    plt = pyplot()
    models = list(dict.fromkeys(r["model"] for r in rows))
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(models), 4))
    width = 0.8 / (len(defenses) + 1)
    for j, defense in enumerate(["base", *defenses]):
        xs, values = [], []
        for i, model in enumerate(models):
            found = [r for r in rows if r["model"] == model and (r["defense"] == defense or defense == "base")]
            if not found:
                continue
            value = found[0]["base worst case"] if defense == "base" else found[0]["worst case"]
            xs.append(i + (j - len(defenses) / 2) * width)
            values.append(100 * (value or 0.0))
        label = "base model" if defense == "base" else DEFENSE_ROW_NAMES.get(defense, defense)
        bars = ax.bar(xs, values, width, label=label, hatch="//" if defense == "base" else None)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)  # a worst case of 0 has no bar to see
    ax.set_xticks(range(len(models)), models)
    ax.set(ylabel="worst-case robust accuracy (%)", ylim=(0, 100), title="Test-time defenses: per-sample worst case")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save_figure(fig, stem)
