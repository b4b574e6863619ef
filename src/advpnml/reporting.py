"""Tables of an evaluation as Markdown, CSV and JSON, with the settings, versions and timings."""
from __future__ import annotations

import csv
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .evaluation import EvalResult

ROW_NAMES = {"base": "Base model", "defense": "Adversarial pNML"}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown_table(result: EvalResult, paper: dict[str, dict[str, float]] | None = None) -> str:
    """The Table-1 layout: one row per model, natural / each attack / best attack (per-sample worst case)."""
    table = result.accuracy()
    columns = result.columns() + ["Best attack"]
    lines = ["| Model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for row, accs in table.items():
        lines.append(f"| {ROW_NAMES.get(row, row)} | " + " | ".join(_pct(accs.get(c)) for c in columns) + " |")
        if paper and row in paper:
            lines.append(f"| *paper: {ROW_NAMES.get(row, row)}* | " + " | ".join(_pct(paper[row].get(c)) for c in columns) + " |")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """Versions and hardware, written with every result."""
    from . import __version__

    return {
        "advpnml": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_report(result: EvalResult, out_dir: str | os.PathLike, extra: dict[str, Any] | None = None,
                 paper: dict[str, dict[str, float]] | None = None) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv`` and ``results.json`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = result.accuracy()
    n = len(result.records)
    settings = asdict(result.settings)
    md = [f"# Robust accuracy on {result.settings.dataset} ({result.settings.split}, {n} samples, eps={result.settings.eps:g})", "",
          markdown_table(result, paper), "",
          "Best attack: a sample counts as robust only if it is classified correctly naturally and under every attack (per-sample worst case).", "",
          "## Attacks", ""]
    for spec in result.settings.attacks:
        md.append(f"- **{spec.column}**: `{spec.attack}` {json.dumps(spec.params)}; base: {spec.base}; defense: {spec.defense or '-'}")
    md += ["", "## Time (seconds)", "", "| Row/column | Seconds |", "|---|---|"]
    md += [f"| {k} | {v:.1f} |" for k, v in result.timings.items()]
    paths = {"md": out / "results.md", "csv": out / "results.csv", "json": out / "results.json"}
    paths["md"].write_text("\n".join(md) + "\n")
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        columns = result.columns() + ["Best attack"]
        writer.writerow(["model"] + columns + ["samples"])
        for row, accs in table.items():
            writer.writerow([row] + ["" if accs.get(c) is None else f"{accs[c]:.4f}" for c in columns] + [n])
    worst = {row: result.worst_attack(row) for row in table}
    summary = {
        "settings": settings, "samples": n, "accuracy": table, "timings_s": result.timings,
        "worst_attack_counts": {row: {k or "robust": names.count(k) for k in set(names)} for row, names in worst.items()},
        "environment": environment(), **(extra or {}),
    }
    paths["json"].write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return paths
