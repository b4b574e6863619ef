"""When does the defense help? What the refinement does on real data, and the defense's worst case beside the base model's.

Per model and lambda (``advpnml reproduce mechanism``), on clean inputs and on the adversarial inputs of a transfer
attack (APGD-T on the base model) and of an adaptive one (margin PGD through the defense):

- the true label's gain in probability from its own lambda-step, ``p_y(x_y) - p_y(x)`` (eq. 9-11), beside the gain
  of the best wrong label (the one whose refined probability is highest) from its own step;
- how saturated the clean predictions are (the base model's top probability);
- how often the paper's two mechanisms (Sec. 4.1) occur: a refinement that does not raise its target's
  probability (convergence to a local maximum), and one that lowers it (overshoot);
- the base model's robust accuracy at eps and at eps + lambda (attacks on the base model only), beside the
  defense's per-sample worst case at eps under the attacks through it (an ordinary resumable evaluation in
  ``OUT/lam=<value>/``).

:func:`predict` turns the quantities that need no attack through the defense into a predicted outcome (the defense
raises, keeps or lowers the worst case); :func:`collect` checks it against every measured point and lists the misses.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import APGDT, PGD
from ..config import DefenseSpec
from ..data import as_tensors, dataset_bounds
from ..defense import AdversarialPnml
from ..evaluation.engine import evaluate
from ..evaluation.reporting import pct
from ..jobs import Run
from ..models.layout import use_memory_format
from ..plotting import pyplot, save_figure
from ..runtime import Runtime
from ..validation import check_positive_int

#: The attacks the defense's worst case is measured with (a cascade, each on what the earlier ones left): the
#: transferred APGD-T, and through the defense APGD-CE, APGD-T, margin PGD and its second-order variant.
WORST_CASE_COLUMNS = ("APGD-T", "APGD-CE adaptive", "APGD-T adaptive", "Adaptive-margin", "Adaptive-margin 2nd-order")
#: A change of the worst case within this many points (or one sample, whichever is larger) is "keeps".
KEEP_POINTS = 2.0
#: An outcome: the defense raises, keeps or lowers the base model's per-sample worst case.
OUTCOMES = ("raises", "keeps", "lowers")


def refinement_statistics(model: nn.Module, defended: AdversarialPnml, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """What the refinement does to each label on ``x``: the probability each label has before (``p_j(x)``) and on
    its own refined input (``p_j(x_j)``), summarized (means over samples, fractions over (sample, label) pairs)."""
    with torch.no_grad():
        before = F.softmax(model(x).float(), 1)
        own = defended.hypotheses(x).probs.float()
        decided = defended(x).argmax(1)
    n, c = own.shape
    rows = torch.arange(n)
    true_gain = own[rows, y] - before[rows, y]
    wrong = own.clone()
    wrong[rows, y] = -1.0
    best_wrong = wrong.argmax(1)
    wrong_gain = own[rows, best_wrong] - before[rows, best_wrong]
    mask = torch.ones(n, c, dtype=torch.bool)
    mask[rows, y] = False
    delta = own - before
    return {
        "samples": n,
        "true_gain": true_gain.tolist(),
        "wrong_gain": wrong_gain.tolist(),
        "mean_true_gain": true_gain.mean().item(),
        "mean_wrong_gain": wrong_gain.mean().item(),
        "wrong_gain_exceeds_true": (wrong_gain > true_gain).float().mean().item(),
        "true_not_raised": (delta[rows, y] <= 0).float().mean().item(),
        "true_lowered": (delta[rows, y] < -1e-6).float().mean().item(),
        "wrong_not_raised": (delta[mask] <= 0).float().mean().item(),
        "wrong_lowered": (delta[mask] < -1e-6).float().mean().item(),
        "any_not_raised": (delta <= 0).float().mean().item(),
        "any_lowered": (delta < -1e-6).float().mean().item(),
        "base_correct": (before.argmax(1) == y).float().mean().item(),
        "defense_correct": (decided == y).float().mean().item(),
        "top_probability_median": before.max(1).values.median().item(),
        "saturated": (before.max(1).values > 0.99).float().mean().item(),
    }


def transfer_examples(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, bounds, seed: int = 0, steps: int = 100
) -> torch.Tensor:
    """APGD-T (``steps``, 9 targets) on the base model at ``eps``: the transferred examples the statistics are taken at,
    and the first attack of :func:`base_robust`."""
    return APGDT(eps, steps=steps, n_targets=9, bounds=bounds, seed=seed)(model, x, y)


def base_robust(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    bounds,
    seed: int = 0,
    steps: int = 100,
    transferred: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per sample: the base model correct naturally, under APGD-T (``steps``, 9 targets) and margin PGD (``steps`` of
    2.5 eps / steps) at ``eps``. ``transferred``: APGD-T's examples (:func:`transfer_examples`) when the caller has
    them at this eps already."""
    if transferred is None:
        transferred = transfer_examples(model, x, y, eps, bounds, seed, steps)
    margin = PGD(eps, steps, 2.5 * eps / steps, loss="margin", early_stop="steps", bounds=bounds, seed=seed)
    with torch.no_grad():
        ok = model(x).argmax(1) == y
        ok &= model(transferred).argmax(1) == y
        ok &= model(margin(model, x, y)).argmax(1) == y
    return ok


def measure_point(
    run: Run,
    lam: float,
    out: Path,
    runtime: Runtime,
    base_at_eps: torch.Tensor,
    transferred: torch.Tensor,
    steps: int = 100,
) -> dict[str, Any]:
    """One lambda: the refinement's statistics on clean, transferred (``transferred``: :func:`transfer_examples` at
    eps, the same for every lambda) and adaptive inputs, the base model at eps + lambda, and the defense's per-sample
    worst case at eps (resumable in ``out``). ``steps``: the budget of the attacks outside the evaluation (the base
    model's, and those whose examples the statistics are taken on)."""
    settings, dataset = run.settings, run.dataset
    bounds = dataset_bounds(dataset)
    x, y = as_tensors(dataset, runtime.device)
    model = run.model
    defended = AdversarialPnml.from_spec(model, replace(settings.defense or DefenseSpec(lam), refine_eps=lam), bounds).eval()
    eps = settings.eps
    start = time.perf_counter()
    adaptive = PGD(eps, steps, 2.5 * eps / steps, loss="margin", early_stop="steps", bounds=bounds, seed=settings.seed)(
        defended, x, y
    )
    stats = {
        name: refinement_statistics(model, defended, inputs, y)
        for name, inputs in (("clean", x), ("transfer", transferred), ("adaptive", adaptive))
    }
    wider = eps + lam if bounds is None else min(eps + lam, bounds[1] - bounds[0])
    base_wider = base_robust(model, x, y, wider, bounds, settings.seed, steps)
    point_settings = replace(settings, refine_eps=lam)
    result = evaluate(model, dataset, point_settings, out, runtime.quiet())
    defense_robust = int(result.robust("defense").sum())
    base_robust_count = int((result.robust("base").cpu() & base_at_eps.cpu()).sum())
    n = len(y)
    return {
        "lambda": lam,
        "eps": eps,
        "samples": n,
        "base_at_eps": base_robust_count / n,
        "base_at_eps_plus_lambda": int(base_wider.sum()) / n,
        "defense_worst": defense_robust / n,
        "defense_minus_base": (defense_robust - base_robust_count) / n,
        "robust_samples": {"base": base_robust_count, "defense": defense_robust},
        "columns": {c: a for c, a in result.accuracy()["defense"].items() if a is not None},
        "refinement": stats,
        "seconds": time.perf_counter() - start,
    }


def outcome(point: dict[str, Any]) -> str:
    """What the defense did to the worst case: ``raises``/``lowers`` by more than :data:`KEEP_POINTS` points and more than
    one sample, else ``keeps`` (counted in samples, so no rounding decides it)."""
    n = point["samples"]
    gain = round(point["defense_minus_base"] * n)
    tolerance = _tolerance(n)
    return "raises" if gain > tolerance else "lowers" if gain < -tolerance else "keeps"


def _tolerance(n: int) -> int:
    """Samples within which a change counts as none: :data:`KEEP_POINTS` points of ``n``, at least one sample."""
    return max(1, int(KEEP_POINTS / 100 * n))


def free_step_loss(point: dict[str, Any]) -> float:
    """How much robustness the base model loses over the extra lambda: its accuracy at eps minus at eps + lambda."""
    return point["base_at_eps"] - point["base_at_eps_plus_lambda"]


def gain_gap(point: dict[str, Any]) -> float:
    """On clean inputs, how much more the best wrong label gains from its own lambda-step than the true label from its
    own (mean over samples, in probability)."""
    clean = point["refinement"]["clean"]
    return clean["mean_wrong_gain"] - clean["mean_true_gain"]


#: A gain gap above this (in probability) counts as "the wrong labels gain more from the refinement".
GAIN_GAP = 0.05


def _loses_free_step(point: dict[str, Any]) -> bool:
    return round(free_step_loss(point) * point["samples"]) > _tolerance(point["samples"])


def _free_step(point: dict[str, Any]) -> str:
    return "lowers" if _loses_free_step(point) else "keeps"


def _free_step_saturated(point: dict[str, Any]) -> str:
    saturated = point["refinement"]["clean"]["saturated"] > 0.5
    return "lowers" if _loses_free_step(point) and saturated else "keeps"


#: A model is "confident" when its median clean top probability is above this.
CONFIDENT = 0.9


def _confident(point: dict[str, Any]) -> bool:
    return point["refinement"]["clean"]["top_probability_median"] > CONFIDENT


def _free_step_confident(point: dict[str, Any]) -> str:
    return "lowers" if _loses_free_step(point) and _confident(point) else "keeps"


def _gain_gap(point: dict[str, Any]) -> str:
    return "lowers" if gain_gap(point) > GAIN_GAP else "keeps"


def _free_step_and_gain_gap(point: dict[str, Any]) -> str:
    return "lowers" if _loses_free_step(point) and gain_gap(point) > GAIN_GAP else "keeps"


#: The simple rules checked against every measured point, each from quantities that need no attack through the defense
#: (the base model's robust accuracy at eps and eps + lambda, and the refinement on clean inputs). None predicts a
#: gain: no measured point has one. ``results/mechanism/rule.md`` lists every rule's hits and the chosen one's misses.
RULES: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "free step": (
        f"lowers iff the base model loses more than {KEEP_POINTS:g} points (and one sample) between eps and eps + lambda: "
        "the attacker through the defense gets the free targeted lambda-step the refinement gives every wrong label",
        _free_step,
    ),
    "free step, saturated": (
        "the free step, and most clean predictions saturated (top probability > 0.99): the true label's own step "
        "cannot win the free step back where its probability has no room to grow",
        _free_step_saturated,
    ),
    "free step, confident": (
        f"the free step, and the median clean top probability above {CONFIDENT:g}: as the saturated rule, with the "
        "threshold set after the first four models (LeNet-5, official CNN, ResNet-4B, certified CNN) and before the demo "
        "model and the ResNet-18 control were measured",
        _free_step_confident,
    ),
    "gain gap": (
        f"lowers iff on clean inputs the best wrong label gains more than {GAIN_GAP:g} (mean probability) more from its "
        "own lambda-step than the true label from its own",
        _gain_gap,
    ),
    "free step and gain gap": ("both the free step and the gain gap", _free_step_and_gain_gap),
}
#: The rule :func:`predict` uses (the one with the most hits over the measured points; see ``rule.md``).
CHOSEN_RULE = "free step, confident"


def predict(point: dict[str, Any]) -> str:
    """The outcome :data:`CHOSEN_RULE` predicts from quantities that need no attack through the defense (see
    :data:`RULES` for what each rule reads and why)."""
    return RULES[CHOSEN_RULE][1](point)


def run_mechanism(run: Run, lams: list[float], out: str | Path, runtime: Runtime, steps: int = 100) -> Path:
    """Measure every lambda of ``lams`` for ``run``'s model and write ``mechanism.md/.csv/.json`` and the figures
    (``gains.png``: the two gains' distributions; ``worst_case.png``: the defense's worst case against the base model
    at eps and at eps + lambda). ``steps``: the budget of the attacks on the base model and of those the statistics
    are taken at (the worst case through the defense is ``run``'s settings)."""
    check_positive_int("steps", steps)
    runtime = runtime.for_rank()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings, dataset = run.settings, run.dataset
    x, y = as_tensors(dataset, runtime.device)
    model = run.model.to(runtime.device).eval()
    use_memory_format(model, runtime.device, runtime.memory_format, example=x[:2])
    bounds = dataset_bounds(dataset)
    transferred = transfer_examples(model, x, y, settings.eps, bounds, settings.seed, steps)
    base_at_eps = base_robust(model, x, y, settings.eps, bounds, settings.seed, steps, transferred)
    runtime.log(
        f"mechanism of {settings.model} on {settings.dataset} ({len(y)} samples), eps {settings.eps:g}, lambda "
        f"{', '.join(f'{v:g}' for v in lams)}; base model robust at eps: {pct(base_at_eps.float().mean().item())}"
    )
    points = []
    for lam in lams:
        point = measure_point(run, lam, out / f"lam={lam:g}", runtime, base_at_eps, transferred, steps)
        point.update(model=settings.model, dataset=settings.dataset, outcome=outcome(point), predicted=predict(point))
        points.append(point)
        runtime.log(_line(point))
    summary = {
        "model": settings.model,
        "dataset": settings.dataset,
        "eps": settings.eps,
        "samples": len(y),
        "probe_steps": steps,
        "columns": list(WORST_CASE_COLUMNS),
        "points": points,
    }
    (out / "mechanism.json").write_text(json.dumps(summary, indent=2) + "\n")
    _write_csv(out / "mechanism.csv", points)
    _plot_gains(points, out / "gains")
    _plot_worst(points, out / "worst_case", f"{Path(settings.model).name} on {settings.dataset}, eps {settings.eps:g}")
    (out / "mechanism.md").write_text(markdown(summary) + "\n")
    runtime.log(f"\n{markdown(summary)}\nwrote {out / 'mechanism.md'}, .csv, .json, gains.png, worst_case.png")
    return out / "mechanism.md"


def _line(point: dict[str, Any]) -> str:
    return (
        f"  lambda {point['lambda']:g}: base {pct(point['base_at_eps'])} at eps, {pct(point['base_at_eps_plus_lambda'])} at "
        f"eps+lambda; defense worst {pct(point['defense_worst'])} ({point['outcome']}, predicted {point['predicted']})"
    )


TABLE_COLUMNS = (
    "lambda",
    "base at eps",
    "base at eps+lambda",
    "defense worst case",
    "outcome",
    "predicted",
    "clean top-p median",
    "saturated",
    "gain true / best wrong (clean)",
    "(transfer)",
    "(adaptive)",
    "target not raised / lowered (clean, all labels)",
)


def _row(point: dict[str, Any]) -> list[str]:
    r = point["refinement"]

    def gains(kind: str) -> str:
        return f"{r[kind]['mean_true_gain']:+.3f} / {r[kind]['mean_wrong_gain']:+.3f}"

    clean = r["clean"]
    pairs = clean["any_not_raised"], clean["any_lowered"]
    return [
        f"{point['lambda']:g}",
        pct(point["base_at_eps"]),
        pct(point["base_at_eps_plus_lambda"]),
        pct(point["defense_worst"]),
        point["outcome"],
        point["predicted"],
        f"{clean['top_probability_median']:.3f}",
        pct(clean["saturated"]),
        gains("clean"),
        gains("transfer"),
        gains("adaptive"),
        f"{pct(pairs[0])} / {pct(pairs[1])}",
    ]


def markdown(summary: dict[str, Any]) -> str:
    """The per-lambda table and a short verdict for one model."""
    points = summary["points"]
    steps = summary.get("probe_steps", 100)
    lines = [
        f"# When does the defense help? {summary['model']} on {summary['dataset']}",
        "",
        f"{summary['samples']} test samples, eps {summary['eps']:g}. Base model at eps and at eps + lambda: APGD-T "
        f"({steps} steps, 9 targets) and margin PGD-{steps} on the base model, per sample. Defense worst case at eps: a cascade of "
        f"{', '.join(summary['columns'])} (per sample, base row included). Gains: mean over samples of "
        "p_label(x_label) - p_label(x), the true label's and the best wrong label's (the wrong label whose refined "
        "probability is highest); clean, at APGD-T's transferred examples and at margin PGD's through the defense.",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    lines += ["| " + " | ".join(_row(p)) + " |" for p in points]
    hits = sum(p["outcome"] == p["predicted"] for p in points)
    effects = ", ".join(
        f"{p['outcome']} the worst case at lambda {p['lambda']:g} ({100 * p['defense_minus_base']:+.1f} points)" for p in points
    )
    lines += [
        "",
        f"Verdict: the defense {effects}. The rule (advpnml.experiments.mechanism.predict) predicts {hits} of "
        f"{len(points)} outcomes.",
    ]
    return "\n".join(lines)


def _write_csv(path: Path, points: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "dataset", "eps", *TABLE_COLUMNS])
        for p in points:
            writer.writerow([p["model"], p["dataset"], p["eps"], *_row(p)])


def _plot_gains(points: list[dict[str, Any]], stem: Path) -> list[Path]:
    plt = pyplot()
    kinds = ("clean", "transfer", "adaptive")
    fig, axes = plt.subplots(len(points), len(kinds), figsize=(3.4 * len(kinds), 2.4 * len(points)), squeeze=False)
    for row, point in zip(axes, points):
        for ax, kind in zip(row, kinds):
            stats = point["refinement"][kind]
            ax.hist(stats["true_gain"], bins=30, range=(-1, 1), alpha=0.6, label="true label")
            ax.hist(stats["wrong_gain"], bins=30, range=(-1, 1), alpha=0.6, label="best wrong label")
            ax.set_title(f"lambda {point['lambda']:g}, {kind} inputs", fontsize="small")
            ax.set_xlabel("gain in probability from its own step", fontsize="small")
    axes[0][0].legend(fontsize="x-small")
    fig.tight_layout()
    return save_figure(fig, stem)


def _plot_worst(points: list[dict[str, Any]], stem: Path, title: str) -> list[Path]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    lams = [p["lambda"] for p in points]
    ax.plot(lams, [100 * p["base_at_eps"] for p in points], "o-", label="base model at eps")
    ax.plot(lams, [100 * p["base_at_eps_plus_lambda"] for p in points], "s--", label="base model at eps + lambda")
    ax.plot(lams, [100 * p["defense_worst"] for p in points], "^-", label="defense at eps (worst case through it)")
    ax.set(xlabel="lambda", ylabel="robust accuracy (%)", title=title)
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, stem)


def _plot_rule(points: list[dict[str, Any]], stem: Path) -> list[Path]:
    """Every point: the defense's change of the worst case against the base model's loss over the free step, filled
    where the model is confident (the chosen rule's two inputs)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    models = list(dict.fromkeys(p["label"] for p in points))
    for i, name in enumerate(models):
        mine = [p for p in points if p["label"] == name]
        confident = _confident(mine[0])
        ax.scatter(
            [100 * free_step_loss(p) for p in mine],
            [100 * p["defense_minus_base"] for p in mine],
            marker="os^vDP"[i % 6],
            facecolors=f"C{i}" if confident else "none",
            edgecolors=f"C{i}",
            label=f"{name} ({'confident' if confident else 'not confident'})",
        )
    ax.axhline(0, color="gray", lw=0.8)
    ax.set(
        xlabel="base model's loss from eps to eps + lambda (points)",
        ylabel="defense worst case minus base (points)",
        title="What the defense does to the worst case, per model and lambda",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    return save_figure(fig, stem)


def collect(paths: list[str | Path], out: str | Path) -> Path:
    """Check every rule of :data:`RULES` against every measured point of the ``mechanism.json`` files: ``rule.md`` with
    every point, its outcome, each rule's prediction, each rule's hits and the chosen rule's misses; ``rule.json``."""
    points = []
    for path in paths:
        summary = json.loads(Path(path).read_text())
        label = Path(path).parent.name or Path(summary["model"]).name
        points += [{**p, "model": summary["model"], "label": label, "dataset": summary["dataset"]} for p in summary["points"]]
    names = list(RULES)
    for p in points:
        p["rules"] = {name: RULES[name][1](p) for name in names}
        p["outcome"], p["predicted"] = outcome(p), p["rules"][CHOSEN_RULE]
    hits = {name: sum(p["rules"][name] == p["outcome"] for p in points) for name in names}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = ["model", "dataset", "eps", "lambda", "samples", "base at eps", "base at eps+lambda", "defense worst"]
    header += ["clean saturated", "gain gap (clean)", "outcome", *(f"rule: {name}" for name in names)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in points:
        cells = [p["label"], p["dataset"], f"{p['eps']:.4g}", f"{p['lambda']:g}", str(p["samples"])]
        cells += [pct(p["base_at_eps"]), pct(p["base_at_eps_plus_lambda"]), pct(p["defense_worst"])]
        cells += [pct(p["refinement"]["clean"]["saturated"]), f"{gain_gap(p):+.3f}", f"**{p['outcome']}**"]
        cells += [p["rules"][name] for name in names]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Rules (each from quantities that need no attack through the defense):", ""]
    lines += [f"- **{name}**: {RULES[name][0]}. Hits: {hits[name]} of {len(points)}." for name in names]
    misses = [p for p in points if p["outcome"] != p["predicted"]]
    lines += [
        "",
        f"The chosen rule ({CHOSEN_RULE}) predicts {len(points) - len(misses)} of {len(points)} points.",
        "Misses: "
        + (
            "; ".join(f"{p['label']} at lambda {p['lambda']:g} ({p['outcome']}, predicted {p['predicted']})" for p in misses)
            or "none"
        )
        + ".",
    ]
    (out / "rule.md").write_text("\n".join(lines) + "\n")
    _plot_rule(points, out / "rule")
    rules = {name: {"description": RULES[name][0], "hits": hits[name]} for name in names}
    saved = {"chosen": CHOSEN_RULE, "rules": rules, "points": points}
    (out / "rule.json").write_text(json.dumps(saved, indent=2, default=str) + "\n")
    return out / "rule.md"
