"""Per-sample records of an evaluation: the result model, the append-only records file, resume and merge.

A run's records live in ``records.jsonl``: a header line with the settings and their digest, then one
JSON line per sample (its label, each row's prediction under each column, the queries black-box
attacks spent, batch-level attack flags). Appended batch by batch and fsynced, so a killed run loses
at most the batch in flight; under torchrun each rank appends to ``records.rank{r}.jsonl`` and rank 0
merges them into the file a single process writes.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .attacks import REFERENCE_ATTACKS
from .config import EvalSettings

ROWS = ("base", "defense")

#: The prediction recorded for a sample that a cascade did not attack (it was already misclassified).
SKIPPED = -1


@dataclass
class EvalResult:
    """Per-sample records and what the report needs."""

    settings: EvalSettings
    records: list[dict[str, Any]]
    timings: dict[str, float]

    def columns(self) -> list[str]:
        return ["Natural"] + [spec.column for spec in self.settings.attacks]

    def rows(self) -> list[str]:
        return [row for row in ROWS if self.records and row in self.records[0]["pred"]] or ["base"]

    def correct(self, row: str, column: str) -> torch.Tensor | None:
        """Boolean per sample (None when the column was not run for this row)."""
        if not self.records or column not in self.records[0]["pred"].get(row, {}):
            return None
        return torch.tensor([r["pred"][row][column] == r["label"] for r in self.records])

    def robust(self, row: str) -> torch.Tensor:
        """Per-sample worst case: correct naturally and under every attack run for this row."""
        return self.robust_over(row, self.columns())

    def robust_over(self, row: str, columns: list[str]) -> torch.Tensor:
        """Per sample: correct under every one of ``columns`` that was run for this row."""
        ok = torch.ones(len(self.records), dtype=torch.bool)
        for column in columns:
            c = self.correct(row, column)
            if c is not None:
                ok &= c
        return ok

    def reference_comparison(self) -> dict[str, dict[str, Any]]:
        """Per row with a reference column (the reference AutoAttack): our attacks' per-sample worst case,
        the reference's, both together, and how many samples only one side breaks."""
        reference = [s.column for s in self.settings.attacks if s.attack in REFERENCE_ATTACKS]
        ours = [c for c in self.columns() if c not in reference]
        out = {}
        for row in self.rows():
            theirs = [c for c in reference if self.correct(row, c) is not None]
            if not theirs:
                continue
            ours_ok, theirs_ok = self.robust_over(row, ours), self.robust_over(row, ["Natural", *theirs])
            out[row] = {"ours": ours_ok.float().mean().item(), "reference": theirs_ok.float().mean().item(),
                        "both": (ours_ok & theirs_ok).float().mean().item(), "only_reference_breaks": int((ours_ok & ~theirs_ok).sum()),
                        "only_ours_break": int((theirs_ok & ~ours_ok).sum()), "samples": len(self.records),
                        "our_columns": [c for c in ours[1:] if self.correct(row, c) is not None], "reference_columns": theirs}
        return out

    def accuracy(self) -> dict[str, dict[str, float | None]]:
        """{row: {column: accuracy or None, ..., "Best attack": worst-case accuracy}}."""
        table = {}
        for row in self.rows():
            table[row] = {}
            for column in self.columns():
                c = self.correct(row, column)
                table[row][column] = None if c is None else c.float().mean().item()
            table[row]["Best attack"] = self.robust(row).float().mean().item()
        return table

    def worst_attack(self, row: str) -> list[str | None]:
        """Per sample, the first column (natural included) that misclassifies it; None if robust."""
        names = []
        for r in self.records:
            bad = [c for c in self.columns() if c in r["pred"][row] and r["pred"][row][c] != r["label"]]
            names.append(bad[0] if bad else None)
        return names


class RecordsFile:
    """Append-only JSON-lines file of per-sample records with a settings header.

    Opening it checks the header's digest, drops a line cut short by a killed run (and anything
    after it), and keeps the complete records in :attr:`done`.
    """

    def __init__(self, path: Path, settings: EvalSettings, resume: bool = True) -> None:
        self.path = path
        self.digest = settings.digest()
        self.done: dict[int, dict[str, Any]] = {}
        if path.exists() and resume:
            self.done, good_lines, total_lines = read_records(path, self.digest)
            if good_lines != total_lines:
                with open(path, "r+") as f:
                    f.truncate(sum(len(line) for line in path.read_text().splitlines(keepends=True)[:good_lines]))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w") as f:
                f.write(json.dumps({"type": "header", "digest": self.digest, "settings": asdict(settings)}, default=str) + "\n")

    def append(self, records: list[dict[str, Any]]) -> None:
        with open(self.path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
        for r in records:
            self.done[r["index"]] = r


def read_records(path: Path, digest: str) -> tuple[dict[int, dict[str, Any]], int, int]:
    """The complete records of ``path`` (checked against ``digest``), the count of good lines, and of all lines."""
    lines = path.read_text().splitlines(keepends=True)
    header = json.loads(lines[0]) if lines and lines[0].endswith("\n") else {}
    if header.get("digest") != digest:
        raise ValueError(
            f"{path} was written by a run with other settings (digest {header.get('digest')} != {digest}); "
            "use another --out folder or --overwrite"
        )
    done = {}
    good = 1
    for line in lines[1:]:
        if not line.endswith("\n"):
            break  # the last line of a killed run may be cut short; drop it and everything after
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        done[record["index"]] = record
        good += 1
    return done, good, len(lines)


def record_files(out: Path) -> list[Path]:
    """``records.jsonl`` and the per-rank files a torchrun job leaves while it runs."""
    return sorted(p for p in out.glob("records*.jsonl") if p.name == "records.jsonl" or p.name.startswith("records.rank"))


def read_all_records(out: Path, settings: EvalSettings) -> dict[int, dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}
    for path in record_files(out):
        done.update(read_records(path, settings.digest())[0])
    return done


def merge_records(out: Path, settings: EvalSettings, records: list[dict[str, Any]]) -> None:
    """Replace the per-rank files by one ``records.jsonl`` in sample order, as a single process writes it."""
    tmp = out / "records.jsonl.tmp"
    header = {"type": "header", "digest": settings.digest(), "settings": asdict(settings)}
    tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in [header, *records]))
    os.replace(tmp, out / "records.jsonl")
    for path in record_files(out):
        if path.name != "records.jsonl":
            path.unlink()


def tally(running: dict[str, list[int]], records: list[dict[str, Any]]) -> None:
    for r in records:
        for row, cols in r["pred"].items():
            for column, p in cols.items():
                key = f"{row[0]}:{column}"
                hit = running.setdefault(key, [0, 0])
                hit[0] += int(p == r["label"])
                hit[1] += 1
