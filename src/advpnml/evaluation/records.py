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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..attacks import REFERENCE_ATTACKS
from ..config import EvalSettings, only_the_path_changed
from ..plotting import write_atomic
from .identity import identity_changes

ROWS = ("base", "defense")

#: The prediction recorded for a sample that a cascade did not attack (it was already misclassified).
SKIPPED = -1


@dataclass
class EvalResult:
    """Per-sample records and what the report needs."""

    settings: EvalSettings
    records: list[dict[str, Any]]
    timings: dict[str, float]
    #: how many samples ``timings`` cover (a resumed run times only what it ran); None: all records
    timed_samples: int | None = None
    #: the gradient-masking checks run beside it (:func:`advpnml.evaluation.masking.masking_checks`), when they ran
    checks: list[Any] = field(default_factory=list)

    @property
    def samples_timed(self) -> int:
        """The samples ``timings`` cover: this call's, or every record when the result does not say."""
        return len(self.records) if self.timed_samples is None else self.timed_samples

    def columns(self) -> list[str]:
        """``Natural`` and every attack column, in the settings' order."""
        return ["Natural"] + [spec.column for spec in self.settings.attacks]

    def rows(self) -> list[str]:
        """The rows the records hold: ``base``, and ``defense`` when it was evaluated."""
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
            out[row] = {
                "ours": ours_ok.float().mean().item(),
                "reference": theirs_ok.float().mean().item(),
                "both": (ours_ok & theirs_ok).float().mean().item(),
                "only_reference_breaks": int((ours_ok & ~theirs_ok).sum()),
                "only_ours_break": int((theirs_ok & ~ours_ok).sum()),
                "samples": len(self.records),
                "our_columns": [c for c in ours[1:] if self.correct(row, c) is not None],
                "reference_columns": theirs,
            }
        return out

    def accuracy(self) -> dict[str, dict[str, float | None]]:
        """{row: {column: accuracy or None, ..., "Best attack": worst-case accuracy}}."""
        table: dict[str, dict[str, float | None]] = {}
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


class RunMismatchError(ValueError):
    """An output folder holds records of another run (other settings, model, data or versions): resuming would mix them."""


def header_line(settings: EvalSettings, identity: dict[str, str] | None = None) -> bytes:
    """The first line of a records file: the settings, their digest and (when known) the run's identity."""
    fields = {
        "type": "header",
        "digest": settings.digest(),
        "settings": asdict(settings),
        **({"identity": identity} if identity else {}),
    }
    return (json.dumps(fields, default=str) + "\n").encode()


class RecordsFile:
    """Append-only JSON-lines file of per-sample records with a settings header.

    Opening it checks the header's digest and keeps the complete records in :attr:`done`, repairing without
    loss: a line cut short by a killed run is dropped, a corrupt line anywhere is moved to
    ``records.jsonl.corrupt`` with a warning (the valid records after it stay), and an empty or headerless
    file is set aside the same way and started afresh. Repairs and headers are written atomically.
    """

    def __init__(
        self,
        path: Path,
        settings: EvalSettings,
        resume: bool = True,
        log: Callable[[str], None] = print,
        identity: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self.done: dict[int, dict[str, Any]] = {}
        header = header_line(settings, identity)
        if path.exists() and resume:
            scan = scan_records(path, settings, identity)
            # A batch only partly on file (a cut or corrupt line in it) is redone whole: its other lines go, so none is
            # written twice.
            partial = _partial_batches(scan.done, settings)
            if partial:
                scan.good = [(i, line) for i, line in scan.good if i // settings.batch_size not in partial]
            self.done = {i: scan.done[i] for i, _ in scan.good}
            if scan.corrupt:
                aside = path.with_name(path.name + ".corrupt")
                with open(aside, "ab") as f:
                    f.write(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in scan.corrupt))
                log(
                    f"warning: {path}: {len(scan.corrupt)} unreadable line(s) moved to {aside}; "
                    f"{len(scan.done)} records kept, the rest will be redone"
                )
            if scan.header is None or scan.corrupt or scan.cut or partial:
                write_atomic(path, (scan.header or header) + b"".join(line for _, line in scan.good))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, header)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` (one batch) and fsync: a killed run loses at most the batch in flight."""
        try:
            with open(self.path, "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in records))
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            raise ValueError(
                f"cannot append to {self.path}: {err.strerror or err}; the records before this batch are "
                "kept and a rerun resumes there"
            ) from None
        for r in records:
            self.done[r["index"]] = r


@dataclass
class RecordsScan:
    """What a records file holds: its header line (None if missing or unreadable), the records by index, their
    lines, the unreadable lines, and whether the last line was cut short."""

    header: bytes | None
    done: dict[int, dict[str, Any]]
    good: list[tuple[int, bytes]]
    corrupt: list[bytes]
    cut: bool


def _partial_batches(done: dict[int, dict[str, Any]], settings: EvalSettings) -> set[int]:
    """The batches (index // batch_size) with some but not all of their samples in ``done``."""
    if settings.n is None:
        return set()
    size = settings.batch_size
    return {b for b in {i // size for i in done} if not all(i in done for i in range(b * size, min((b + 1) * size, settings.n)))}


def scan_records(path: Path, settings: EvalSettings, identity: dict[str, str] | None = None) -> RecordsScan:
    """Read ``path`` line by line in bytes; a header of other settings, or of another model, data or version than
    ``identity`` (:mod:`advpnml.evaluation.identity`), is a one-line refusal naming what changed. The same checkpoint by
    another path resumes when the header's content hashes match (the path is a name, the hashes are the model)."""
    lines = path.read_bytes().splitlines(keepends=True)
    header = _header(lines[0]) if lines else None
    if header is None:
        return RecordsScan(None, {}, [], lines, False)  # empty or headerless: a fresh start, the bytes set aside
    if header.get("digest") != settings.digest():
        changes = settings.changes_from(header.get("settings"))
        hashed = isinstance(header.get("identity"), dict) and "model_sha256" in header["identity"] and identity
        if not (hashed and only_the_path_changed(changes)):
            raise RunMismatchError(
                f"{path} was written by a run with other settings: {'; '.join(changes) or 'unknown'}; "
                "use another --out folder or --overwrite"
            )
    changed = identity_changes(header.get("identity"), identity or {})
    if changed:
        raise RunMismatchError(
            f"{path} was written with other content: {'; '.join(changed)}; use another --out folder or --overwrite"
        )
    done, good, corrupt, cut = {}, [], [], False
    for line in lines[1:]:
        if not line.endswith(b"\n"):
            cut = True  # the last line of a killed run: dropped, its batch is redone
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not _is_record(record):
            corrupt.append(line)  # unreadable, or readable but not a whole record (``{"index": 3}``): redone
            continue
        done[record["index"]] = record
        good.append((record["index"], line))
    return RecordsScan(lines[0], done, good, corrupt, cut)


def _header(line: bytes) -> dict[str, Any] | None:
    """``line``, a records file's first, as its header (None: cut short, unreadable or not a header)."""
    try:
        header = json.loads(line) if line.endswith(b"\n") else None
    except ValueError:
        return None
    return header if isinstance(header, dict) and header.get("type") == "header" else None


def _is_record(record: Any) -> bool:
    """A whole per-sample record: an index and a label (whole numbers), and a prediction per row and column."""

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(record, dict) or not whole(record.get("index")) or record["index"] < 0 or not whole(record.get("label")):
        return False
    pred = record.get("pred")
    return (
        isinstance(pred, dict)
        and bool(pred)
        and all(isinstance(cols, dict) and cols and all(whole(p) for p in cols.values()) for cols in pred.values())
        and isinstance(record.get("queries", {}), dict)
    )


def record_files(out: Path) -> list[Path]:
    """``records.jsonl`` and the per-rank files a torchrun job leaves while it runs."""
    return sorted(p for p in out.glob("records*.jsonl") if p.name == "records.jsonl" or p.name.startswith("records.rank"))


def recorded_settings(out: Path) -> EvalSettings | None:
    """The settings in the header of ``out/records.jsonl`` (None: no file or no readable header)."""
    path = out / "records.jsonl"
    if not path.exists():
        return None
    with open(path, "rb") as f:
        header = _header(f.readline())
    try:
        return None if header is None else EvalSettings.from_stored(header["settings"])
    except (ValueError, KeyError, TypeError):
        return None


def read_all_records(out: Path, settings: EvalSettings, identity: dict[str, str] | None = None) -> dict[int, dict[str, Any]]:
    """Every readable record of ``out``'s records files (checked against ``settings`` and ``identity``)."""
    done: dict[int, dict[str, Any]] = {}
    for path in record_files(out):
        done.update(scan_records(path, settings, identity).done)
    return done


def merge_records(
    out: Path, settings: EvalSettings, records: list[dict[str, Any]], identity: dict[str, str] | None = None
) -> None:
    """Replace the per-rank files by one ``records.jsonl`` in sample order, as a single process writes it."""
    write_atomic(
        out / "records.jsonl",
        header_line(settings, identity) + "".join(json.dumps(r, default=str) + "\n" for r in records).encode(),
    )
    for path in record_files(out):
        if path.name != "records.jsonl":
            path.unlink()


def tally(running: dict[str, list[int]], records: list[dict[str, Any]]) -> None:
    """Add ``records`` to the running correct/seen counts per row and column (the progress bar's figures)."""
    for r in records:
        for row, cols in r["pred"].items():
            for column, p in cols.items():
                key = f"{row[0]}:{column}"
                hit = running.setdefault(key, [0, 0])
                hit[0] += int(p == r["label"])
                hit[1] += 1
