"""Robust accuracy of a base model and its Adversarial pNML defense, per sample, resumable.

The protocol (AutoAttack's habits, the paper's Table 1 columns):
- every sample is attacked by every attack; its prediction under each is recorded, so the
  "best attack" column is the per-sample worst case (a sample is robust only if it is
  classified correctly naturally and under every attack), never the minimum of columns;
- for the defended model an attack runs either end to end through the defense (``direct``:
  the paper's adaptive attack, or black-box HSJA on the defense's decisions) or on the base
  model with the examples then given to the defense (``transfer``: the paper's FGSM/PGD
  columns of "Ours");
- records are appended to ``records.jsonl`` batch by batch; a rerun with the same settings
  resumes after the last complete batch, and each batch's attack seed derives from the run
  seed and the batch's first sample index, so a resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset

from .attacks import REFERENCE_ATTACKS, Attack, create_attack
from .defense import AdversarialPnml
from .distributed import DistContext
from .models.layout import use_memory_format

ROWS = ("base", "defense")

#: The prediction recorded for a sample that a cascade did not attack (it was already misclassified).
SKIPPED = -1


@dataclass
class AttackSpec:
    """One column of the table.

    column: its name in the report ("FGSM", "PGD", "Adaptive", "HSJA").
    attack: a key of :data:`advpnml.attacks.ATTACKS`; params: its keyword arguments (eps comes
    from the evaluation unless given). base: run it on the base model. defense: ``"direct"``
    (through the defense), ``"transfer"`` (examples computed on the base model), or ``None``.
    """

    column: str
    attack: str
    params: dict[str, Any] = field(default_factory=dict)
    base: bool = True
    defense: str | None = "direct"

    def __post_init__(self) -> None:
        if self.defense not in (None, "direct", "transfer"):
            raise ValueError(f"attack {self.column!r}: defense must be 'direct', 'transfer' or none, got {self.defense!r}")
        if not self.base and self.defense is None:
            raise ValueError(f"attack {self.column!r} runs on no model (base=false and defense={self.defense!r})")


@dataclass
class EvalSettings:
    """What an evaluation run is; its hash decides whether a results file can be resumed.

    ``cascade``: AutoAttack's protocol. Each attack runs, per model row, only on the samples that the
    natural prediction and every earlier column left correct; a skipped sample's prediction is
    recorded as :data:`SKIPPED`. The per-sample worst case is the same quantity as without it, at a
    fraction of the cost (strong attacks first, expensive ones on the few survivors); a column's
    accuracy then reads "robust after this attack and all before it". Reference attacks
    (:data:`advpnml.attacks.REFERENCE_ATTACKS`) always see every sample, so ours and theirs can be
    compared sample by sample.
    """

    dataset: str
    split: str
    n: int | None
    eps: float
    refine_eps: float | None
    attacks: list[AttackSpec]
    refine_steps: int = 1
    top_k: int | None = None
    batch_size: int = 100
    seed: int = 0
    model: str = ""
    cascade: bool = False
    bpda: str = "identity"

    def digest(self) -> str:
        values = asdict(self)
        # Runs written before these options existed keep their digest at the defaults, so they resume.
        for key, default in (("cascade", False), ("bpda", "identity")):
            if values[key] == default:
                del values[key]
        return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; a clear error when CUDA is asked for and absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine; use --device cpu")
    return device


def build_attack(spec: AttackSpec, eps: float, bounds, seed: int) -> Attack:
    """The attack object of one column at radius ``eps`` (``spec.params`` may override eps)."""
    params = {"eps": eps, "bounds": bounds, **spec.params, "seed": seed}
    return create_attack(spec.attack, **params)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


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
            self.done, good_lines, total_lines = _read_records(path, self.digest)
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


def _read_records(path: Path, digest: str) -> tuple[dict[int, dict[str, Any]], int, int]:
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


def _record_files(out: Path) -> list[Path]:
    """``records.jsonl`` and the per-rank files a torchrun job leaves while it runs."""
    return sorted(p for p in out.glob("records*.jsonl") if p.name == "records.jsonl" or p.name.startswith("records.rank"))


def _read_all_records(out: Path, settings: EvalSettings) -> dict[int, dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}
    for path in _record_files(out):
        done.update(_read_records(path, settings.digest())[0])
    return done


def _merge_records(out: Path, settings: EvalSettings, records: list[dict[str, Any]]) -> None:
    """Replace the per-rank files by one ``records.jsonl`` in sample order, as a single process writes it."""
    tmp = out / "records.jsonl.tmp"
    header = {"type": "header", "digest": settings.digest(), "settings": asdict(settings)}
    tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in [header, *records]))
    os.replace(tmp, out / "records.jsonl")
    for path in _record_files(out):
        if path.name != "records.jsonl":
            path.unlink()


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    settings: EvalSettings,
    out_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    resume: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    dist_ctx: DistContext | None = None,
    memory_format: str = "auto",
) -> EvalResult:
    """Evaluate ``model`` and (if ``settings.refine_eps`` is set) its defense under ``settings.attacks``.

    With ``out_dir`` the per-sample records go to ``out_dir/records.jsonl`` as batches finish and
    an interrupted run resumes there. Returns every record and the time spent per (row, column).

    Under torchrun (``dist_ctx``) the batches still to do are dealt round-robin to the ranks; each
    rank appends to ``records.rank{r}.jsonl`` and, when all are done, rank 0 merges them into the
    ``records.jsonl`` a single process would have written (a batch's result depends only on its
    samples and seed, never on the rank). A job that lost ranks resumes with any number of
    processes: every rank reads every records file before dealing out the remaining batches.
    Timings are summed over ranks (compute seconds), and ``timings["wall"]`` is this call's wall time.

    ``model`` is moved to ``device`` and, by ``memory_format`` (see :mod:`advpnml.models.layout`), to
    channels_last when it is convolutional and on CPU: same values, faster there.
    """
    start_wall = time.perf_counter()
    ctx = dist_ctx or DistContext()
    if not ctx.is_main:
        log, progress = (lambda message: None), False
    device = torch.device(device) if not isinstance(device, torch.device) else device
    model = model.to(device).eval()
    use_memory_format(model, device, memory_format, example=dataset[0][0].unsqueeze(0) if len(dataset) else None)
    bounds = getattr(getattr(dataset, "info", None), "bounds", (0.0, 1.0))
    models: dict[str, nn.Module] = {"base": model}
    if settings.refine_eps is not None:
        models["defense"] = AdversarialPnml(model, settings.refine_eps, settings.refine_steps, top_k=settings.top_k, bounds=bounds,
                                            bpda=settings.bpda).eval()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and not resume and ctx.is_main:
        for path in _record_files(out):
            path.unlink()
    ctx.barrier()
    done = _read_all_records(out, settings) if out is not None and resume else {}
    ctx.barrier()  # every rank has read the old files before any rank truncates or appends to its own
    store = None
    if out is not None:
        store = RecordsFile(out / ("records.jsonl" if not ctx.enabled else f"records.rank{ctx.rank}.jsonl"), settings, resume)
    if done:
        log(f"resuming: {len(done)} samples already in {out}")
    n = len(dataset)
    batches = [list(range(s, min(s + settings.batch_size, n))) for s in range(0, n, settings.batch_size)]
    mine = ctx.shard([b for b in batches if not all(i in done for i in b)])
    timings: dict[str, float] = {}
    running: dict[str, list[int]] = {}
    _tally(running, [done[i] for i in range(n) if i in done])
    bar = _progress(n if not ctx.enabled else sum(map(len, mine)), progress, ctx)
    bar.update(sum(1 for i in done if i < n) if not ctx.enabled else 0)
    loader = DataLoader(Subset(dataset, [i for b in mine for i in b]), batch_size=settings.batch_size, shuffle=False)
    for indices, (x, y) in zip(mine, loader):
        x, y = x.to(device), y.to(device)
        batch_seed = settings.seed * 1_000_003 + indices[0]
        preds = _evaluate_batch(models, x, y, settings, bounds, batch_seed, timings,
                                status=lambda key, first=indices[0]: bar.set_description_str(f"evaluate [{key} on {first}+]"))
        records = [
            {"index": i, "label": int(y[k]), "pred": {row: {c: int(p[k]) for c, p in cols.items()} for row, cols in preds["pred"].items()},
             "queries": {key: int(q[k]) for key, q in preds["queries"].items()}, **({"flags": preds["flags"]} if preds["flags"] else {})}
            for k, i in enumerate(indices)
        ]
        if store is not None:
            store.append(records)
        done.update({r["index"]: r for r in records})
        _tally(running, records)
        bar.update(len(indices))
        bar.set_postfix_str(" ".join(f"{k}={v[0] / max(v[1], 1):.3f}" for k, v in running.items()))
    bar.set_description_str(_progress_label(ctx))
    bar.close()
    if ctx.enabled:
        ctx.barrier()
        if out is not None:
            done = _read_all_records(out, settings)
        else:
            for part in ctx.gather({i: r for i, r in done.items()}):
                done.update(part)
        timings = _sum_timings(ctx.gather(timings))
    ordered = [done[i] for i in range(n) if i in done]
    if out is not None and ctx.is_main and any(p.name != "records.jsonl" for p in _record_files(out)):
        _merge_records(out, settings, ordered)
    ctx.barrier()  # no rank returns (and perhaps starts another evaluation) before the merge
    timings["wall"] = time.perf_counter() - start_wall
    result = EvalResult(settings, ordered, timings)
    table = result.accuracy()
    for key, seconds in timings.items():
        if "/" not in key:
            continue
        row, column = key.split("/", 1)
        acc = table.get(row, {}).get(column)
        log(f"{row:>7} {column:<12} accuracy {acc if acc is None else f'{100 * acc:5.1f}%'}  ({seconds:.1f} s)")
    return result


def _sum_timings(parts: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for part in parts:
        for key, seconds in part.items():
            total[key] = total.get(key, 0.0) + seconds
    return total


def _evaluate_batch(models, x, y, settings, bounds, seed, timings, status: Callable[[str], None] = lambda key: None) -> dict[str, dict]:
    """Every column of one batch: predictions per row, queries per sample, and batch-level attack flags.

    Without a cascade every attack sees the whole batch. With one, each row keeps the mask of samples
    still correct, an attack runs on the masked samples only, and the others get :data:`SKIPPED`.
    """
    pred: dict[str, dict[str, torch.Tensor]] = {row: {} for row in models}
    queries: dict[str, torch.Tensor] = {}
    flags: dict[str, dict[str, str]] = {}

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        status(key)  # long attacks: the progress bar names the one running, within seconds of its start
        t0 = time.perf_counter()
        value = fn()
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        return value

    def attack_on(key: str, spec: AttackSpec, target: nn.Module, mask: torch.Tensor | None) -> torch.Tensor:
        """Adversarial inputs for the masked samples (``x`` elsewhere; all when ``mask`` is None);
        the attack's queries and flags are noted under ``key``."""
        attack = build_attack(spec, settings.eps, bounds, seed)
        if mask is None:
            adv = timed(key, lambda: attack(target, x, y))
        else:
            adv = x.clone()
            if mask.any():
                adv[mask] = timed(key, lambda: attack(target, x[mask], y[mask]))
        if getattr(attack, "queries", None) is not None:
            used = attack.queries.cpu()
            queries[key] = used if mask is None else torch.zeros(len(y), dtype=used.dtype).masked_scatter(mask.cpu(), used)
        if getattr(attack, "flags", None):
            flags[key] = dict(attack.flags)
        return adv

    def predict_on(model: nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return _predict(model, inputs)
        out = torch.full_like(y, SKIPPED)
        if mask.any():
            out[mask] = _predict(model, inputs[mask])
        return out

    for row, m in models.items():
        pred[row]["Natural"] = timed(f"{row}/Natural", lambda: _predict(m, x))
    alive = {row: pred[row]["Natural"] == y for row in models}
    for spec in settings.attacks:
        cascade = settings.cascade and spec.attack not in REFERENCE_ATTACKS
        on_defense = "defense" in models and spec.defense is not None
        base_mask = alive["base"] if cascade else None
        defense_mask = alive["defense"] if cascade and on_defense else None
        if spec.base or spec.defense == "transfer":
            need = None
            if cascade:
                need = (base_mask if spec.base else torch.zeros_like(base_mask))
                if on_defense and spec.defense == "transfer":
                    need = need | defense_mask
            base_adv = attack_on(f"base/{spec.column}", spec, models["base"], need)
            if spec.base:
                pred["base"][spec.column] = predict_on(models["base"], base_adv, base_mask)
        if on_defense:
            if spec.defense == "transfer":
                pred["defense"][spec.column] = timed(f"defense/{spec.column}",
                                                     lambda: predict_on(models["defense"], base_adv, defense_mask))
            else:
                adv = attack_on(f"defense/{spec.column}", spec, models["defense"], defense_mask)
                pred["defense"][spec.column] = predict_on(models["defense"], adv, defense_mask)
        if cascade:
            for row in alive:
                if spec.column in pred[row]:
                    alive[row] &= pred[row][spec.column] == y
    return {"pred": {row: {c: p.cpu() for c, p in cols.items()} for row, cols in pred.items()}, "queries": queries, "flags": flags}


def _tally(running: dict[str, list[int]], records: list[dict[str, Any]]) -> None:
    for r in records:
        for row, cols in r["pred"].items():
            for column, p in cols.items():
                key = f"{row[0]}:{column}"
                hit = running.setdefault(key, [0, 0])
                hit[0] += int(p == r["label"])
                hit[1] += 1


def _progress(total: int, enabled: bool, ctx: DistContext):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=_progress_label(ctx), unit="img", disable=not enabled, dynamic_ncols=True)


def _progress_label(ctx: DistContext) -> str:
    return "evaluate" if not ctx.enabled else f"evaluate (rank 0 of {ctx.world_size})"
