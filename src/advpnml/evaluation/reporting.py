"""Tables of an evaluation as Markdown, CSV and JSON, with the settings, versions and timings."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..attacks import BLACK_BOX, REFERENCE_ATTACKS
from ..config import EvalSettings
from .records import EvalResult, write_atomic

ROW_NAMES = {"base": "Base model", "defense": "Adversarial pNML"}
#: the defense row's name for each registry defense (a user's own: "Your defense (LABEL)")
DEFENSE_ROW_NAMES = {"pnml": "Adversarial pNML", "hedge": "Hedge", "anti-adversary": "Anti-adversary", "tte": "TTE"}


def row_name(row: str, settings: EvalSettings) -> str:
    """A table row's name: ``Base model``, or the defense the settings name."""
    if row != "defense":
        return ROW_NAMES.get(row, row)
    name = settings.defense_name
    return DEFENSE_ROW_NAMES.get(name) or f"Your defense ({name.removeprefix('own:').strip()})"


def pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal ("-" when the cell was not run): every table's format."""
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown_table(result: EvalResult, paper: dict[str, dict[str, float]] | None = None) -> str:
    """The Table-1 layout: one row per model, natural / each attack / best attack (per-sample worst case)."""
    table = result.accuracy()
    columns = result.columns() + ["Best attack"]
    lines = ["| Model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for row, accs in table.items():
        lines.append(f"| {row_name(row, result.settings)} | " + " | ".join(pct(accs.get(c)) for c in columns) + " |")
        if paper and row in paper:
            lines.append(
                f"| *paper: {row_name(row, result.settings)}* | " + " | ".join(pct(paper[row].get(c)) for c in columns) + " |"
            )
    return "\n".join(lines)


FAMILIES = ("static", "transfer", "adaptive", "black-box", "reference")


def robustness_summary(result: EvalResult) -> dict[str, dict[str, float | None]]:
    """Croce et al. (ICML 2022)'s layout: per model, clean accuracy and the per-sample worst case over
    each family of attacks (static: on the base model; transfer: base-model examples given to the
    defense; adaptive: white-box through the defense; black-box), and over all of them."""
    families: dict[str, dict[str, list[str]]] = {"base": {}, "defense": {}}
    for spec in result.settings.attacks:
        if spec.attack in REFERENCE_ATTACKS:
            for row in ("base",) * spec.base + ("defense",) * (spec.defense is not None):
                families[row].setdefault("reference", []).append(spec.column)
            continue
        if spec.base:
            families["base"].setdefault("black-box" if spec.attack in BLACK_BOX else "static", []).append(spec.column)
        if spec.defense == "transfer":
            families["defense"].setdefault("transfer", []).append(spec.column)
        elif spec.defense == "direct":
            families["defense"].setdefault("black-box" if spec.attack in BLACK_BOX else "adaptive", []).append(spec.column)
    summary = {}
    for row in result.rows():
        entry: dict[str, float | None] = {"clean": result.robust_over(row, ["Natural"]).float().mean().item()}
        for family in FAMILIES:
            columns = families[row].get(family)
            if columns:
                entry[family] = result.robust_over(row, ["Natural", *columns]).float().mean().item()
            else:
                entry[family] = None
        entry["worst case"] = result.robust(row).float().mean().item()
        summary[row] = entry
    return summary


def inference_cost(result: EvalResult) -> dict[str, dict[str, Any]]:
    """Passes per input and measured seconds per sample of the base model and the defense (natural inputs)."""
    n = result.samples_timed
    s = result.settings

    def ms(key: str) -> float | None:  # None when this call timed no sample (a run resumed complete)
        return 1e3 * result.timings[key] / n if n and key in result.timings else None

    cost = {"base": {"passes": "1 forward", "ms_per_sample": ms("base/Natural")}}
    if s.refine_eps is not None and s.defense_name != "pnml":
        cost["defense"] = {"passes": defense_passes(s.defense_name, s.defense_params), "ms_per_sample": ms("defense/Natural")}
    elif s.refine_eps is not None:
        h = f"k = {s.top_k}" if s.top_k else "C"
        steps = f" + {s.refine_steps - 1} more refinement steps on the H refined inputs" if s.refine_steps > 1 else ""
        cost["defense"] = {
            "passes": f"1 forward + H input-gradient backward passes (VJPs of that forward) + H forwards, H = {h}{steps}",
            "ms_per_sample": ms("defense/Natural"),
        }
    return cost


def defense_passes(name: str, params: dict[str, Any]) -> str:
    """A defense's passes per input in words (the registry's defaults where its parameters do not say)."""
    if name == "tte":
        views = (5 if params.get("shift", 2) else 1) * (2 if params.get("flip", True) else 1)
        return f"{views} forwards (one per view)"
    if name in ("hedge", "anti-adversary"):
        steps = params.get("steps", 20 if name == "hedge" else 2)
        runs = params.get("score_runs", 5 if name == "hedge" else 1)
        extra = " + 1 forward for its own label" if name == "anti-adversary" else ""
        scored = f", each scored prediction the worst of {runs} random draws" if name == "hedge" and runs > 1 else ""
        return f"{steps} forward + backward refinement steps + 1 forward{extra}{scored}"
    return "your defense's (not counted)"


def defense_title(s: EvalSettings) -> str:
    """The defense in a title: ``lambda 0.1`` for the pNML, ``hedge (steps 20, step_size 0.0157, ...)`` for the others,
    ``no defense`` for a base-only run."""
    if s.refine_eps is None:
        return "no defense"
    if s.defense_name == "pnml":
        return f"lambda {s.refine_eps:g}"
    values = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.defense_params.items())
    return s.defense_name + (f" ({values})" if values else "")


def summary_table(result: EvalResult) -> str:
    """The Croce et al. layout as Markdown, with the inference cost beside each model."""
    summary, cost = robustness_summary(result), inference_cost(result)
    columns = [
        "clean",
        *(f for f in FAMILIES if f != "reference" or any(e.get(f) is not None for e in summary.values())),
        "worst case",
    ]
    lines = ["| Model | " + " | ".join(columns) + " | inference | ms / sample |", "|---|" + "---|" * (len(columns) + 2)]
    for row, entry in summary.items():
        c = cost.get(row, {})
        ms = "-" if c.get("ms_per_sample") is None else f"{c['ms_per_sample']:.2f}"
        lines.append(
            f"| {row_name(row, result.settings)} | "
            + " | ".join(pct(entry.get(k)) for k in columns)
            + f" | {c.get('passes', '-')} | {ms} |"
        )
    if "base" in summary and "defense" in summary:
        gain = float(summary["defense"]["worst case"] or 0.0) - float(summary["base"]["worst case"] or 0.0)
        if gain > 0:
            verdict = "the defense raises the per-sample worst case under these attacks"
            if summary["defense"].get("adaptive") is None:
                verdict += "; no attack ran through the defense, so this is no evidence of robustness"
        elif gain < 0:
            verdict = "the defense LOWERS the per-sample worst case: the undefended model is the more robust one"
        else:
            verdict = "the defense does not change the per-sample worst case under these attacks"
        lines += ["", f"Worst case, defense minus base: {100 * gain:+.1f} points: {verdict}."]
    return "\n".join(lines)


def reference_table(result: EvalResult) -> str:
    """Markdown: ours vs the reference AutoAttack per model, worst case over each and over both."""
    comparison = result.reference_comparison()
    if not comparison:
        return ""
    lines = [
        "| Model | our attacks (worst case) | reference AutoAttack | both (per sample) | only the reference breaks | only ours break |",
        "|---|---|---|---|---|---|",
    ]
    for row, c in comparison.items():
        lines.append(
            f"| {row_name(row, result.settings)} | {pct(c['ours'])} | {pct(c['reference'])} | **{pct(c['both'])}** | "
            f"{c['only_reference_breaks']} | {c['only_ours_break']} |"
        )
    return "\n".join(lines)


def plot_results(result: EvalResult, path_stem: Path) -> Path:
    """Grouped bars: accuracy of each model under each attack and the per-sample worst case (PNG and PDF).

    The defense's transferred columns (examples computed on the base model, the paper's FGSM/PGD) are
    hatched, so a tall bar there is not read as the defense resisting an attack aimed at it; the
    worst case stands apart at the right; the title carries the model, lambda, eps and sample count.
    """
    from matplotlib.patches import Patch

    from ..plotting import pyplot, save_figure

    plt = pyplot()
    s = result.settings
    table = result.accuracy()
    columns = result.columns() + ["Best attack"]
    transferred = {spec.column for spec in s.attacks if spec.defense == "transfer"}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(columns)), 4))
    width = 0.8 / max(len(table), 1)
    colors = {}
    for i, (row, accs) in enumerate(table.items()):
        xs = [j + (i - (len(table) - 1) / 2) * width + (0.5 if c == "Best attack" else 0.0) for j, c in enumerate(columns)]
        values = [100 * float(accs.get(c) or 0.0) for c in columns]
        bars = ax.bar(xs, values, width, label=row_name(row, result.settings))
        colors[row] = bars[0].get_facecolor()
        for bar, c in zip(bars, columns):
            if row == "defense" and c in transferred:
                bar.set_hatch("//")
                bar.set_alpha(0.6)
            if c == "Best attack":
                bar.set_edgecolor("black")
                bar.set_linewidth(1.2)
            label = "n/a" if accs.get(c) is None else f"{100 * float(accs[c] or 0.0):.0f}"
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
                fontweight="bold" if c == "Best attack" else "normal",
            )
    ax.axvline(len(columns) - 1, color="gray", linestyle=":", linewidth=1)
    ticks = [j + (0.5 if c == "Best attack" else 0.0) for j, c in enumerate(columns)]
    names = [
        c + (" (transfer)" if c in transferred else "") if c != "Best attack" else "Best attack\n(per-sample worst case)"
        for c in columns
    ]
    ax.set_xticks(ticks, names, rotation=20, ha="right")
    model = Path(s.model).name if s.model else "model"
    lam = defense_title(s)
    ax.set(
        ylabel="accuracy (%)",
        ylim=(0, 110),
        title=f"{s.dataset}, {model}: {len(result.records)} samples, eps {s.eps:g}, {lam}" + (" (cascade)" if s.cascade else ""),
    )
    handles, _ = ax.get_legend_handles_labels()
    if transferred and "defense" in table:
        handles.append(
            Patch(
                facecolor=colors["defense"],
                alpha=0.6,
                hatch="//",
                label="defense, transferred:\nbase-model examples,\nnot an attack on the defense",
            )
        )
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)  # outside: inside it hides bars
    return save_figure(fig, path_stem)[0]


def environment() -> dict[str, Any]:
    """Versions and hardware, written with every result."""
    from ..version import __version__

    return {
        "advpnml": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_report(
    result: EvalResult,
    out_dir: str | os.PathLike,
    extra: dict[str, Any] | None = None,
    paper: dict[str, dict[str, float]] | None = None,
    checks: list | None = None,
) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv`` and ``results.json`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = result.accuracy()
    n = len(result.records)
    settings = asdict(result.settings)
    md = [
        f"# Robust accuracy on {result.settings.dataset} ({result.settings.split}, {n} samples, eps={result.settings.eps:g}, "
        f"{defense_title(result.settings)})",
        "",
        markdown_table(result, paper),
        "",
        "Best attack: a sample counts as robust only if it is classified correctly naturally and under every attack (per-sample worst case).",
        "",
        "## Summary (Croce et al. 2022 layout)",
        "",
        summary_table(result),
        "",
        "static: attacks on the base model; transfer: base-model examples given to the defense; adaptive: white-box "
        f"attacks through the defense ({result.settings.bpda} backward through the refinement); black-box: decision- or score-based "
        "attacks on the defense; worst case: per sample, over everything run.",
        "",
    ]
    if result.settings.cascade:
        md += [
            "Cascade (AutoAttack's protocol): each attack ran only on the samples that every earlier column left correct, "
            'so a column reads "robust after this attack and all before it"; the reference AutoAttack saw every sample.',
            "",
        ]
    if result.reference_comparison():
        md += [
            "## Our attacks vs the reference AutoAttack",
            "",
            reference_table(result),
            "",
            "Both: a sample counts as robust only if neither side broke it. The reference is `pyautoattack` "
            "(Croce & Hein's code) at its fixed budgets, run through the defense with the "
            f"{'identity' if result.settings.bpda == 'identity' else 'clamp-in-graph'} backward.",
            "",
        ]
    if checks:
        md += [
            "## Gradient-masking checks",
            "",
            *[
                f"- `{c.status.upper()}` {row_name(c.row, result.settings) if c.row in ROW_NAMES else c.row}: **{c.name}**: {c.detail}"
                for c in checks
            ],
            "",
        ]
    md += ["## Attacks", ""]
    for spec in result.settings.attacks:
        md.append(
            f"- **{spec.column}**: `{spec.attack}` {json.dumps(spec.params)}; base: {spec.base}; defense: {spec.defense or '-'}"
        )
    md += [
        "",
        f"## Time (seconds, this call: {result.samples_timed} of {n} samples evaluated, the rest resumed)",
        "",
        "| Row/column | Seconds |",
        "|---|---|",
    ]
    md += [f"| {k} | {v:.1f} |" for k, v in result.timings.items()]
    paths = {"md": out / "results.md", "csv": out / "results.csv", "json": out / "results.json"}
    paths["png"] = plot_results(result, out / "results")
    write_atomic(paths["md"], ("\n".join(md) + "\n").encode())
    rows = io.StringIO()
    writer = csv.writer(rows)
    columns = result.columns() + ["Best attack"]
    writer.writerow(["model"] + columns + ["samples"])
    for row, accs in table.items():
        writer.writerow([row] + ["" if accs.get(c) is None else f"{accs[c]:.4f}" for c in columns] + [n])
    write_atomic(paths["csv"], rows.getvalue().encode())
    worst = {row: result.worst_attack(row) for row in table}
    summary = {
        "settings": settings,
        "samples": n,
        "accuracy": table,
        "timings_s": result.timings,
        "worst_attack_counts": {
            row: {k or "robust": names.count(k) for k in dict.fromkeys(names)} for row, names in worst.items()
        },
        "summary": robustness_summary(result),
        "inference_cost": inference_cost(result),
        "reference_comparison": result.reference_comparison(),
        "masking_checks": [vars(c) for c in checks or []],
        "environment": environment(),
        **(extra or {}),
    }
    write_atomic(paths["json"], (json.dumps(summary, indent=2, default=str) + "\n").encode())
    return paths
