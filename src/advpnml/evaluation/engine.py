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

import os
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..accel.precision import with_precision
from ..attacks import REFERENCE_ATTACKS, Attack, create_attack
from ..config import BPDA_MODES, CLIP_BACKWARDS, AttackSpec, EvalSettings
from ..data import LabeledDataset, dataset_bounds
from ..defense import ExpectationOverTransformation, create_defense
from ..distributed import DistContext
from ..models.layout import use_memory_format
from ..runtime import Runtime
from .identity import run_identity
from .lock import hold
from .records import SKIPPED, EvalResult, RecordsFile, merge_records, read_all_records, record_files, tally

#: column parameters that choose how the defense is differentiated (or, ``refine_steps``, which shortened refinement
#: the attack goes through while the full defense is scored), not the attack's own
DEFENSE_BACKWARD = ("backward", "clip", "refine_steps")


def build_attack(spec: AttackSpec, eps: float, bounds, seed: int) -> Attack:
    """The attack object of one column at radius ``eps`` (``spec.params`` may override eps). ``params.backward`` and
    ``params.clip`` are not the attack's: they name the backward the defense is differentiated with for this column
    (:data:`advpnml.config.BPDA_MODES`, the second-order ones the paper's Appendix B attack; and
    :data:`advpnml.config.CLIP_BACKWARDS`, how the refinement's clip is differentiated)."""
    for key, allowed in (("backward", BPDA_MODES), ("clip", CLIP_BACKWARDS), ("refine_steps", None)):
        value = spec.params.get(key)
        if value is None:
            continue
        if allowed is None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"attack column {spec.column!r}: refine_steps must be a positive whole number, got {value!r}")
        if allowed is not None and value not in allowed:
            raise ValueError(f"attack column {spec.column!r}: {key} must be one of {', '.join(allowed)}, got {value!r}")
        if spec.base or spec.defense != "direct":
            raise ValueError(
                f"attack column {spec.column!r}: {key} changes how the defense is differentiated; it needs "
                'base = false and defense = "direct"'
            )
    params = {"eps": eps, "bounds": bounds, **{k: v for k, v in spec.params.items() if k not in DEFENSE_BACKWARD}, "seed": seed}
    attack = create_attack(spec.attack, **params)
    if getattr(attack, "step_size", None) == 0:  # the library allows it (a pure random-start probe); a column never wants it
        raise ValueError(f"attack column {spec.column!r}: step_size 0 never moves from its start; give a step size > 0")
    return attack


def _predict(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """The prediction; for a random defense (``model.random``) the per-sample worst over ``model.score_runs`` draws:
    a wrong prediction of any draw is kept."""
    runs = int(getattr(model, "score_runs", 1)) if getattr(model, "random", False) and y is not None else 1
    with torch.no_grad():
        pred = model(x).argmax(1)
        for _ in range(runs - 1):
            pred = torch.where(pred == y, model(x).argmax(1), pred)
    return pred


def attack_target(defense: nn.Module, spec: AttackSpec) -> tuple[nn.Module, AttackSpec]:
    """What a column attacks when it goes through ``defense``, and how: the defense differentiated as the column's
    ``backward``/``clip`` say, through a refinement shortened to ``refine_steps``, and, for a random defense, under
    Expectation over Transformation (``defense.eot_draws`` draws per gradient); and ``spec`` as it runs on that.

    Where the attacked forward is not the one that scores the result (a shortened refinement, or a random defense
    scored by its worst draw), leaving a run at the first point that fools the attacked forward
    (``early_stop = "steps"``) stops short of a point that fools the scorer, so such a column keeps each run's
    highest-loss fooling point instead (``early_stop = true``)."""
    target: Any = defense  # a registry defense or the user's: its hooks are duck-typed (advpnml.defense.defense_hooks)
    backward, clip, steps = (spec.params.get(k) for k in DEFENSE_BACKWARD)
    if steps:
        target = target.with_backward(backward, clip, refine_steps=min(int(steps), int(target.steps)))
    elif backward or clip:
        target = target.with_backward(backward, clip)
    random = bool(getattr(defense, "random", False))
    draws = int(getattr(defense, "eot_draws", 1))
    if random and draws > 1:
        target = ExpectationOverTransformation(target, draws)
    if (steps or random) and spec.params.get("early_stop") == "steps":
        spec = replace(spec, params={**spec.params, "early_stop": True})
    return target, spec


def evaluate(
    model: nn.Module,
    dataset: LabeledDataset,
    settings: EvalSettings,
    out_dir: str | os.PathLike | None = None,
    runtime: Runtime | None = None,
    resume: bool = True,
    defense: nn.Module | None = None,
) -> EvalResult:
    """Evaluate ``model`` and (if ``settings.refine_eps`` is set) its defense under ``settings.attacks``.

    The defense is ``settings.defense_name`` from the registry (:func:`advpnml.defense.create_defense`), or
    ``defense``, the user's own module around ``model`` (``settings.defense_name`` then ``own: ...``).

    While it writes, ``out_dir`` is locked (:mod:`advpnml.evaluation.lock`): a second job into it is refused.
    With ``out_dir`` the per-sample records go to ``out_dir/records.jsonl`` as batches finish and
    an interrupted run resumes there. Returns every record and the time spent per (row, column).

    Under torchrun (``runtime.dist``) the batches still to do are dealt round-robin to the ranks; each
    rank appends to ``records.rank{r}.jsonl`` and, when all are done, rank 0 merges them into the
    ``records.jsonl`` a single process would have written (a batch's result depends only on its
    samples and seed, never on the rank). A job that lost ranks resumes with any number of
    processes: every rank reads every records file before dealing out the remaining batches.
    Timings are summed over ranks (compute seconds), and ``timings["wall"]`` is this call's wall time.

    ``model`` is moved to ``runtime.device`` and, by ``runtime.memory_format`` (see
    :mod:`advpnml.models.layout`), to channels_last when it is convolutional and on CPU: same values,
    faster there. ``runtime.precision="bf16"`` runs the classifier under bf16 autocast (:mod:`advpnml.accel.precision`;
    the records header names it, so an fp32 run never resumes a bf16 one).
    """
    runtime = (runtime or Runtime()).for_rank()
    check_precision_for(settings, runtime.precision)
    with hold(out_dir if runtime.is_main else None, runtime.log):  # one writer per folder (see advpnml.evaluation.lock)
        return _evaluate(model, dataset, settings, out_dir, runtime, resume, defense)


def check_precision_for(settings: EvalSettings, precision: str) -> None:
    """bf16 evaluates the base model only: through the defense it weakened the adaptive attack (measured on CPU,
    ``results/precision_agreement_cpu``: MNIST LeNet-5, 500 images, 57.6% of PGD-20 outcomes as in fp32, 73.8% vs
    31.4% robust), so a bf16 defense column would overstate the defense."""
    if precision != "fp32" and settings.defense is not None:
        raise ValueError(
            f"--precision {precision} evaluates the base model only (add --no-defense): through the defense it "
            "weakened the adaptive attack (MNIST: 57.6% of outcomes as in fp32; results/precision_agreement_cpu)"
        )


def _evaluate(
    model: nn.Module,
    dataset: LabeledDataset,
    settings: EvalSettings,
    out_dir: str | os.PathLike | None,
    runtime: Runtime,
    resume: bool,
    defense: nn.Module | None = None,
) -> EvalResult:
    start_wall = time.perf_counter()
    ctx, device, log = runtime.dist, runtime.device, runtime.log
    model = model.to(device).eval()
    use_memory_format(model, device, runtime.memory_format, example=dataset[0][0].unsqueeze(0) if len(dataset) else None)
    bounds = dataset_bounds(dataset)
    identity = (
        run_identity(model, dataset, runtime.precision, defense) if out_dir is not None else None
    )  # what a resume must match
    model = with_precision(model, runtime.precision)
    models: dict[str, nn.Module] = {"base": model}
    if settings.defense is not None:
        if defense is not None:
            models["defense"] = defense.to(device).eval()
        else:
            models["defense"] = create_defense(settings.defense_name, model, settings.defense_params, settings.defense, bounds)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and not resume and ctx.is_main:
        for path in record_files(out):
            path.unlink()
    ctx.barrier()
    done = read_all_records(out, settings, identity) if out is not None and resume else {}
    ctx.barrier()  # every rank has read the old files before any rank truncates or appends to its own
    store = None
    if out is not None:
        store = RecordsFile(
            out / ("records.jsonl" if not ctx.enabled else f"records.rank{ctx.rank}.jsonl"), settings, resume, log, identity
        )
    if done:
        log(f"resuming: {len(done)} samples already in {out}")
    n = len(dataset)
    batches = [list(range(s, min(s + settings.batch_size, n))) for s in range(0, n, settings.batch_size)]
    mine = ctx.shard([b for b in batches if not all(i in done for i in b)])
    timings: dict[str, float] = {}
    running: dict[str, list[int]] = {}
    tally(running, [done[i] for i in range(n) if i in done])
    bar = _progress(n if not ctx.enabled else sum(map(len, mine)), runtime.progress, ctx)
    bar.update(sum(1 for i in done if i < n) if not ctx.enabled else 0)
    loader = DataLoader(
        Subset(cast(Dataset, dataset), [i for b in mine for i in b]), batch_size=settings.batch_size, shuffle=False
    )
    for indices, (x, y) in zip(mine, loader):
        x, y = x.to(device), y.to(device)
        batch_seed = settings.seed * 1_000_003 + indices[0]
        reseed = getattr(models.get("defense"), "reseed", None)
        if callable(reseed):  # a random defense draws the same numbers for this batch in any run, resumed or not
            reseed(batch_seed)
        preds = _evaluate_batch(
            models,
            x,
            y,
            settings,
            bounds,
            batch_seed,
            timings,
            status=partial(_describe, bar, indices[0]),
        )
        records: list[dict[str, Any]] = [
            {
                "index": i,
                "label": int(y[k]),
                "pred": {row: {c: int(p[k]) for c, p in cols.items()} for row, cols in preds["pred"].items()},
                "queries": {key: int(q[k]) for key, q in preds["queries"].items()},
                **({"flags": preds["flags"]} if preds["flags"] else {}),
            }
            for k, i in enumerate(indices)
        ]
        if store is not None:
            store.append(records)
        done.update({r["index"]: r for r in records})
        tally(running, records)
        bar.update(len(indices))
        bar.set_postfix_str(" ".join(f"{k}={v[0] / max(v[1], 1):.3f}" for k, v in running.items()))
    bar.set_description_str(_progress_label(ctx))
    bar.close()
    if ctx.enabled:
        ctx.barrier()
        if out is not None:
            done = read_all_records(out, settings, identity)
        else:
            for part in ctx.gather({i: r for i, r in done.items()}):
                done.update(part)
        timings = _sum_timings(ctx.gather(timings))
    ordered = [done[i] for i in range(n) if i in done]
    if out is not None and ctx.is_main and any(p.name != "records.jsonl" for p in record_files(out)):
        merge_records(out, settings, ordered, identity)
    ctx.barrier()  # no rank returns (and perhaps starts another evaluation) before the merge
    timings["wall"] = time.perf_counter() - start_wall
    timed = int(ctx.sum([float(sum(map(len, mine)))])[0])
    result = EvalResult(settings, ordered, timings, timed_samples=timed)
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


def _evaluate_batch(
    models, x, y, settings, bounds, seed, timings, status: Callable[[str], None] = lambda key: None
) -> dict[str, dict]:
    """Every column of one batch: predictions per row, queries per sample, and batch-level attack flags.

    Without a cascade every attack sees the whole batch. With one, each row keeps the mask of samples
    still correct, an attack runs on the masked samples only, and the others get :data:`SKIPPED`.
    """
    pred: dict[str, dict[str, torch.Tensor]] = {row: {} for row in models}
    queries: dict[str, torch.Tensor] = {}
    flags: dict[str, dict[str, str]] = {}

    # every timed job of this batch: natural predictions, then each attack on its rows (a transfer's prediction included)
    total = len(models) + sum(
        int(spec.base or spec.defense == "transfer") + int("defense" in models and spec.defense is not None)
        for spec in settings.attacks
    )
    started = [0]

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        started[0] += 1
        # long attacks: the progress bar names the one running and how far through the batch it is, within seconds
        status(f"{key}, step {min(started[0], total)}/{total} of the batch")
        t0 = time.perf_counter()
        value = fn()
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        return value

    def attack_on(key: str, spec: AttackSpec, target: nn.Module, mask: torch.Tensor | None) -> torch.Tensor:
        """Adversarial inputs for the masked samples (``x`` elsewhere; all when ``mask`` is None);
        the attack's queries and flags are noted under ``key``."""
        attack = build_attack(spec, settings.eps, bounds, seed)
        attack.progress = _throttled(lambda words: status(f"{key}: {words}"))
        if mask is None:
            adv = timed(key, lambda: attack(target, x, y))
        else:
            adv = x.clone()
            if mask.any():
                adv[mask] = timed(key, lambda: attack(target, x[mask], y[mask]))
        spent = getattr(attack, "queries", None)  # black-box attacks count their queries, per sample
        if spent is not None:
            used = spent.cpu()
            queries[key] = used if mask is None else torch.zeros(len(y), dtype=used.dtype).masked_scatter(mask.cpu(), used)
        raised = getattr(attack, "flags", None)  # the reference AutoAttack's warnings
        if raised:
            flags[key] = dict(raised)
        return adv

    def predict_on(model: nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return _predict(model, inputs, y)
        out = torch.full_like(y, SKIPPED)
        if mask.any():
            out[mask] = _predict(model, inputs[mask], y[mask])
        return out

    for row, m in models.items():
        pred[row]["Natural"] = timed(f"{row}/Natural", lambda: _predict(m, x, y))
    alive = {row: pred[row]["Natural"] == y for row in models}
    for spec in settings.attacks:
        cascade = settings.cascade and spec.attack not in REFERENCE_ATTACKS
        on_defense = "defense" in models and spec.defense is not None
        base_mask = alive["base"] if cascade else None
        defense_mask = alive["defense"] if cascade and on_defense else None
        if spec.base or spec.defense == "transfer":
            need = None
            if cascade:
                need = alive["base"] if spec.base else torch.zeros_like(alive["base"])
                if defense_mask is not None and spec.defense == "transfer":
                    need = need | defense_mask
            base_adv = attack_on(f"base/{spec.column}", spec, models["base"], need)
            if spec.base:
                pred["base"][spec.column] = predict_on(models["base"], base_adv, base_mask)
        if on_defense:
            if spec.defense == "transfer":
                pred["defense"][spec.column] = timed(
                    f"defense/{spec.column}", lambda: predict_on(models["defense"], base_adv, defense_mask)
                )
            else:
                target, run = attack_target(models["defense"], spec)
                adv = attack_on(f"defense/{spec.column}", run, target, defense_mask)
                pred["defense"][spec.column] = predict_on(models["defense"], adv, defense_mask)
        if cascade:
            for row in alive:
                if spec.column in pred[row]:
                    alive[row] &= pred[row][spec.column] == y
    return {
        "pred": {row: {c: p.cpu() for c, p in cols.items()} for row, cols in pred.items()},
        "queries": queries,
        "flags": flags,
    }


def _throttled(report: Callable[[str], None], every: float = 0.5) -> Callable[[str], None]:
    """``report``, called at most every ``every`` seconds (an attack reports each step; the bar needs a few a second)."""
    last = [-every]

    def call(words: str) -> None:
        now = time.perf_counter()
        if now - last[0] >= every:
            last[0] = now
            report(words)

    return call


def _describe(bar: Any, first: int, key: str) -> None:
    """Name on the progress bar the job running on the batch that starts at sample ``first``."""
    bar.set_description_str(f"evaluate [{key} on {first}+]")


def _progress(total: int, enabled: bool, ctx: DistContext):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=_progress_label(ctx), unit="img", disable=not enabled, dynamic_ncols=True)


def _progress_label(ctx: DistContext) -> str:
    return "evaluate" if not ctx.enabled else f"evaluate (rank 0 of {ctx.world_size})"
