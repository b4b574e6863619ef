"""Table 1 under two protocols side by side: ours (``strict``) and the paper's official code (``paper``).

The official code (uriyapes/pnml_adv) runs the paper's columns differently from the paper's text and
from us (:data:`advpnml.config.PROTOCOLS`); each preset lists its choices in ``[protocols.paper]``
with a ``note`` per column. This module lines up the two runs' Table 1 cells for one model, so a
reader sees which number moves, by how much, and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import protocol_section
from .records import EvalResult
from .reporting import ROW_NAMES, pct

#: Table 1's cells, in the paper's order.
TABLE1 = ("Natural", "FGSM", "PGD", "Adaptive", "HSJA")


def table1_cells(result: EvalResult, entries: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """{row: {cell: accuracy}} for Table 1's cells, plus "Best attack": the per-sample worst case over them.

    A column fills the cell its entry names with ``table1`` (default: its own name). Under a cascade a
    column is cumulative, so the caller should run protocol comparisons without one.
    """
    cell_of = {e["column"]: e.get("table1", e["column"]) for e in entries}
    cells: dict[str, dict[str, float | None]] = {}
    for row in result.rows():
        cells[row] = {}
        used = ["Natural"]
        for cell in TABLE1:
            columns = ["Natural"] if cell == "Natural" else [c for c, t in cell_of.items() if t == cell]
            ran = [c for c in columns if result.correct(row, c) is not None]
            cells[row][cell] = result.robust_over(row, ran).float().mean().item() if ran else None
            used += ran
        cells[row]["Best attack"] = result.robust_over(row, used).float().mean().item()
    return cells


def comparison_markdown(results: dict[str, EvalResult], config: dict[str, Any]) -> str:
    """Markdown: each Table 1 cell under ``strict`` and ``paper``, the difference, and what moves it."""
    strict_entries = config.get("evaluation", {}).get("attacks", [])
    paper = protocol_section(config, "paper")
    cells = {"strict": table1_cells(results["strict"], strict_entries), "paper": table1_cells(results["paper"], paper["attacks"])}
    s = results["strict"].settings
    lines = [
        f"# Table 1 under two protocols: {s.model}",
        "",
        f"{s.dataset} {s.split}, {len(results['strict'].records)} samples, eps={s.eps:g}, lambda={s.refine_eps}. "
        "strict: our attacks (best iterate, identity BPDA); paper: the official code's choices.",
        "",
        "| Model | Cell | strict | paper protocol | paper minus strict |",
        "|---|---|---|---|---|",
    ]
    for row in cells["strict"]:
        for cell in (*TABLE1, "Best attack"):
            a, b = cells["strict"][row].get(cell), cells["paper"].get(row, {}).get(cell)
            if a is None and b is None:
                continue
            delta = "-" if a is None or b is None else f"{100 * (b - a):+.1f} pts"
            lines.append(f"| {ROW_NAMES.get(row, row)} | {cell} | {pct(a)} | {pct(b)} | {delta} |")
    lines += ["", "## What moves each number", ""]
    lines.append(f"- **BPDA** (every adaptive attack): {paper.get('bpda_note', paper.get('bpda', 'identity'))}.")
    ran = {spec.column for spec in results["paper"].settings.attacks}
    for entry in paper["attacks"]:
        if entry["column"] in ran:
            cell = entry.get("table1", entry["column"])
            lines.append(f"- **{entry['column']}** ({cell} cell): {entry.get('note', 'no note in the preset')}.")
    skipped = [e["column"] for e in paper["attacks"] if e["column"] not in ran]
    if skipped:
        lines.append(f"- Not run here (`--attacks`): {', '.join(skipped)}.")
    return "\n".join(lines) + "\n"


def write_comparison(results: dict[str, EvalResult], config: dict[str, Any], out: Path) -> Path:
    """Write ``protocols.md`` beside the two runs' folders; returns its path."""
    path = Path(out) / "protocols.md"
    path.write_text(comparison_markdown(results, config))
    return path
