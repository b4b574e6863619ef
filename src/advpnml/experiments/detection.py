"""The pNML regret as an adversarial-example detector (the paper's future work), evaluated honestly.

The regret ``log sum_j p_j`` (eq. 8) measures how much the refined hypotheses disagree: each
label's own refinement raises its probability, and an input near a decision boundary lets
several labels reach a high probability. Score = regret; higher = flagged as adversarial. The
detector is reported per attack as ROC AUC and the detection rate at 5% false positives on
natural inputs, and it is attacked by a detector-aware adaptive attack that lowers the regret
while it fools the defense, so the number a user reads is the one an adversary leaves.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..attacks import PGD, margin
from ..config import DefenseSpec
from ..data import as_tensors
from ..defense import AdversarialPnml
from ..evaluation.reporting import pct
from ..jobs import Run
from ..models.layout import use_memory_format
from ..runtime import Runtime


def roc_auc(negatives: torch.Tensor, positives: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counted one half (the Mann-Whitney U statistic)."""
    neg, pos = negatives.double().flatten(), positives.double().flatten()
    if neg.numel() == 0 or pos.numel() == 0:
        raise ValueError("roc_auc needs at least one negative and one positive score")
    scores = torch.cat([neg, pos])
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.double)
    for value in scores.unique():  # average ranks of ties
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    u = ranks[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(neg) * len(pos)))


def detection_rate(negatives: torch.Tensor, positives: torch.Tensor, false_positive_rate: float = 0.05) -> tuple[float, float]:
    """(threshold, fraction of positives above it) with the threshold at the natural scores' 1 - FPR quantile."""
    threshold = float(torch.quantile(negatives.double(), 1 - false_positive_rate))
    return threshold, float((positives.double() > threshold).float().mean())


def roc_curve(negatives: torch.Tensor, positives: torch.Tensor) -> tuple[list[float], list[float]]:
    """False- and true-positive rates over every threshold."""
    thresholds = torch.cat([torch.tensor([float("inf")]), torch.cat([negatives, positives]).double().unique().flip(0)])
    fpr = [(negatives.double() >= t).float().mean().item() for t in thresholds]
    tpr = [(positives.double() >= t).float().mean().item() for t in thresholds]
    return fpr + [1.0], tpr + [1.0]


class RegretAwarePGD(PGD):
    """Adaptive attack on defense + detector: maximize ``margin(log q) - beta * regret`` through the defense.

    It must fool the defense *and* keep the regret as low as a natural input's. ``model`` must
    be an :class:`~advpnml.AdversarialPnml`.
    """

    name = "pgd-regret"

    def __init__(
        self,
        eps: float,
        steps: int = 40,
        step_size: float = 0.01,
        beta: float = 1.0,
        restarts: int = 1,
        bounds=(0.0, 1.0),
        seed: int = 0,
    ) -> None:
        super().__init__(eps, steps, step_size, restarts, loss="margin", keep_best=True, bounds=bounds, seed=seed)
        self.beta = float(beta)

    def _scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(model, AdversarialPnml):
            raise ValueError(f"the detector-aware attack needs an AdversarialPnml model, got {type(model).__name__}")
        out = model.hypotheses(x)
        return out.log_q, margin(out.log_q, y).clamp(max=5.0) - self.beta * out.regret


def regret_scores(defense: AdversarialPnml, x: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """The pNML regret (eq. 8) of every input of ``x``, in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([defense.regret(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).cpu()


def run_detection(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    defense_spec: DefenseSpec,
    eps: float,
    out: str | os.PathLike,
    steps: int = 40,
    step_size: float | None = None,
    beta: float = 1.0,
    bounds=(0.0, 1.0),
    batch_size: int = 100,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Regret detector vs transferred PGD, the adaptive margin attack and the detector-aware attack; writes detect.md/.json/.png."""
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    step_size = step_size or 2.5 * eps / steps
    defense = AdversarialPnml.from_spec(model, defense_spec, bounds).eval()
    refine_eps = defense_spec.refine_eps
    attacks: dict[str, tuple[nn.Module, Any]] = {
        "PGD (transfer from base)": (model, PGD(eps, steps, step_size, bounds=bounds)),
        "Adaptive-margin": (defense, PGD(eps, steps, step_size, loss="margin", bounds=bounds)),
        "Detector-aware adaptive": (defense, RegretAwarePGD(eps, steps, step_size, beta=beta, bounds=bounds)),
    }
    natural = regret_scores(defense, x, batch_size)
    rows: list[dict[str, Any]] = []
    curves = {}
    for name, (target, attack) in attacks.items():
        x_adv = torch.cat([attack(target, x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        with torch.no_grad():
            fooled = torch.cat(
                [defense(x_adv[i : i + batch_size]).argmax(1) != y[i : i + batch_size] for i in range(0, len(x), batch_size)]
            ).cpu()
        scores = regret_scores(defense, x_adv, batch_size)
        successful = scores[fooled]
        auc_all = roc_auc(natural, scores)
        auc_ok = roc_auc(natural, successful) if successful.numel() else None
        threshold, rate = detection_rate(natural, successful) if successful.numel() else (None, None)
        rows.append(
            {
                "attack": name,
                "fooled_defense": float(fooled.float().mean()),
                "auc_all": auc_all,
                "auc_successful": auc_ok,
                "detected_at_5pct_fpr": rate,
                "threshold": threshold,
                "undetected_and_fooled": None if rate is None else float(fooled.float().mean()) * (1 - rate),
            }
        )
        curves[name] = roc_curve(natural, successful if successful.numel() else scores)
        log(
            f"  {name:<26} fools the defense on {100 * rows[-1]['fooled_defense']:.1f}%; AUC {auc_all:.3f}"
            + ("" if rate is None else f", detected {100 * rate:.1f}% of successful at 5% FPR")
        )
    summary = {
        "samples": len(y),
        "eps": eps,
        "refine_eps": refine_eps,
        "steps": steps,
        "beta": beta,
        "natural_regret_mean": float(natural.mean()),
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
    (out / "detect.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = [
        f"# Regret as a detector ({len(y)} samples, eps {eps:g}, lambda {refine_eps:g})",
        "",
        "Score: the pNML regret log sum_j p_j; higher = flagged. AUC over all attacked inputs and over those that fool the defense; "
        "detection rate of successful adversarial inputs at 5% false positives on natural inputs.",
        "",
        "| attack | fools defense | AUC (all) | AUC (successful) | detected at 5% FPR | fooled and undetected |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["attack"],
            pct(r["fooled_defense"]),
            f"{r['auc_all']:.3f}",
            _num(r["auc_successful"]),
            pct(r["detected_at_5pct_fpr"]),
            pct(r["undetected_and_fooled"]),
        ]
        md.append("| " + " | ".join(cells) + " |")
    (out / "detect.md").write_text("\n".join(md) + "\n")
    _plot_roc(curves, out / "detect_roc", len(y))
    return summary


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _plot_roc(curves: dict[str, tuple[list[float], list[float]]], stem: Path, n: int) -> None:
    from ..plotting import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], ":", color="gray", label="chance")
    ax.axvline(0.05, color="gray", lw=0.8, linestyle="--")
    ax.set(
        xlabel="false-positive rate (natural inputs flagged)",
        ylabel="true-positive rate (adversarial inputs flagged)",
        title=f"Regret detector ROC ({n} samples)",
    )
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, stem)


def detect(run: Run, out: str | Path | None, runtime: Runtime, steps: int = 40, beta: float = 1.0, batch_size: int = 100) -> Path:
    """The pNML regret as a detector of ``run``'s model's adversarial inputs (:func:`advpnml.experiments.detection.run_detection`),
    written to ``out`` (default ``runs/detect-<dataset>``)."""
    settings, dataset = run.settings, run.dataset
    out = Path(out or f"runs/detect-{settings.dataset}")
    x, y = as_tensors(dataset, runtime.device)
    runtime.log(
        f"regret detector on {settings.dataset} ({len(y)} samples), lambda {settings.refine_eps}, eps {settings.eps}, "
        f"attacks of {steps} steps -> {out}"
    )
    model = run.model.to(runtime.device).eval()
    use_memory_format(model, runtime.device, runtime.memory_format, example=x)
    if settings.defense is None:
        raise ValueError("detect scores the defense's regret: it needs lambda (--lam or the config's refine_eps)")
    run_detection(
        model,
        x,
        y,
        settings.defense,
        settings.eps,
        out,
        steps=steps,
        beta=beta,
        bounds=dataset.info.bounds,
        batch_size=batch_size,
        log=runtime.log,
    )
    runtime.log(
        (out / "detect.md").read_text() + f"wrote {out / 'detect.md'}, {out / 'detect.json'}, {out / 'detect_roc.png'} (and .pdf)"
    )
    return out / "detect.md"
