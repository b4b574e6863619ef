"""The paper's 2-D toy example (Sec. 4.2, Fig. 1): why refining toward the true label wins.

A 4-layer MLP is PGD-trained on two classes (a blob at the origin, a ring of radius 2). On
adversarial test points (PGD at eps 0.95 on the base model) the defense refines toward each label
with lambda 0.6. Two mechanisms make the true hypothesis win (Sec. 4.1): x_adv sits at a local
maximum of the target probability, so refining toward the target gains nothing while refining
toward the true label gains a lot; or the refinement toward the target overshoots and lowers the
target probability. :func:`run_toy` picks one test sample of each from the data, draws the
label-0 probability surface with the arrows, and reports accuracies (including the adaptive
attack through the defense, which the paper's figure does not show).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..config import from_preset
from ..data import as_tensors, load_dataset
from ..defense import AdversarialPnml
from ..evaluation.engine import build_attack
from ..evaluation.reporting import markdown_table
from ..jobs import evaluate_and_report, load_run
from ..plotting import pyplot, save_figure
from ..runtime import Runtime
from ..training.trainer import TrainConfig, train


def select_mechanisms(
    model: nn.Module, defense: AdversarialPnml, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor
) -> dict[str, dict[str, Any]]:
    """One test sample per mechanism, among label-1 points whose x_adv fools the base model but not the defense.

    Judged on the logit margin ``z_0 - z_1`` (probabilities saturate): "local maximum": refining
    x_adv toward the target (0) barely changes the margin while refining toward the true label (1)
    moves it most; "overshoot": refining toward the target *lowers* the target's margin most.
    """
    with torch.no_grad():
        base_pred = model(x_adv).argmax(1)
        defended_pred = defense(x_adv).argmax(1)
        refined = defense.refine(x_adv, torch.tensor([[0, 1]]).expand(len(x), 2))  # (N, 2, 2): toward 0, toward 1

        def margin0(points: torch.Tensor) -> torch.Tensor:
            z = model(points)
            return z[:, 0] - z[:, 1]

        m_adv, m_target, m_true = margin0(x_adv), margin0(refined[:, 0]), margin0(refined[:, 1])
        p_adv, p_target, p_true = model(x_adv).softmax(1), model(refined[:, 0]).softmax(1), model(refined[:, 1]).softmax(1)
    gain_target = m_target - m_adv  # > 0: the refinement toward 0 helps label 0
    gain_true = m_adv - m_true  # > 0: the refinement toward 1 helps label 1
    rescued = (y == 1) & (base_pred == 0) & (defended_pred == 1)
    pool = rescued if rescued.any() else (y == 1) & (base_pred == 0)
    candidates = pool.nonzero().squeeze(1)
    if candidates.numel() == 0:
        return {}
    chosen = {}
    flat = gain_target[candidates] >= 0
    if flat.any():
        score = gain_true[candidates] / (gain_target[candidates].abs() + 1e-3)
        score[~flat] = float("-inf")
        chosen["local maximum"] = int(candidates[score.argmax()])
    overshoot = candidates[gain_target[candidates].argmin()]
    if gain_target[overshoot] < 0:
        chosen["overshoot"] = int(overshoot)
    return {
        name: {
            "index": i,
            "x": x[i].tolist(),
            "x_adv": x_adv[i].tolist(),
            "refined_target": refined[i, 0].tolist(),
            "refined_true": refined[i, 1].tolist(),
            "p0_adv": float(p_adv[i, 0]),
            "p0_refined_target": float(p_target[i, 0]),
            "p1_adv": float(p_adv[i, 1]),
            "p1_refined_true": float(p_true[i, 1]),
            "margin0_adv": float(m_adv[i]),
            "margin0_refined_target": float(m_target[i]),
            "margin0_refined_true": float(m_true[i]),
            "defense_rescues": bool(rescued[i]),
        }
        for name, i in chosen.items()
    }


def plot_mechanisms(model: nn.Module, mechanisms: dict[str, dict[str, Any]], path_stem: Path, extent: float = 3.0) -> list[Path]:
    """Fig. 1: the label-0 probability as a heat map, one panel per mechanism, with x, x_adv and the refinements."""
    plt = pyplot()
    grid = torch.linspace(-extent, extent, 301)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    with torch.no_grad():
        p0 = model(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).softmax(1)[:, 0].reshape(gx.shape)
    panels: list[tuple[str, dict[str, Any] | None]] = [*mechanisms.items()] or [("no sample found", None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5), squeeze=False)
    for ax, (name, m) in zip(axes[0], panels):
        image = ax.imshow(p0.numpy(), extent=(-extent, extent, -extent, extent), origin="lower", cmap="viridis", vmin=0, vmax=1)
        ax.set(xlabel="$x_1$", ylabel="$x_2$")
        if m is None:
            ax.set_title("no label-1 sample fooled the base model")
            continue
        # Zoom on the sample: x, x_adv and both refinements, with a margin.
        pts = torch.tensor([m["x"], m["x_adv"], m["refined_true"], m["refined_target"]])
        center, half = (pts.max(0).values + pts.min(0).values) / 2, (pts.max(0).values - pts.min(0).values).max() / 2 + 0.5
        ax.set_xlim(float(center[0] - half), float(center[0] + half))
        ax.set_ylim(float(center[1] - half), float(center[1] + half))
        ax.plot(*m["x"], "o", color="white", markeredgecolor="black", markersize=9, label="x (label 1)")
        ax.plot(*m["x_adv"], "X", color="red", markeredgecolor="black", markersize=11, label="$x_{adv}$")
        for key, color, label in (
            ("refined_true", "white", "refinement toward $y_{true}=1$"),
            ("refined_target", "orange", "refinement toward $y_{target}=0$"),
        ):
            ax.annotate("", xy=m[key], xytext=m["x_adv"], arrowprops=dict(arrowstyle="-|>", color=color, lw=2.2))
            ax.plot([], [], color=color, lw=2.2, label=label)
        ax.set_title(
            f"{name} (test sample {m['index']})\nlogit margin $z_0 - z_1$: {m['margin0_adv']:.2f} at $x_{{adv}}$,\n"
            f"{m['margin0_refined_target']:.2f} after refining toward 0, {m['margin0_refined_true']:.2f} toward 1",
            fontsize=9,
        )
        ax.legend(loc="lower left", fontsize=8, framealpha=0.85)
    fig.colorbar(image, ax=axes[0].tolist(), label="model probability of label 0", shrink=0.85)
    return save_figure(fig, path_stem)


def run_toy(
    out: str | os.PathLike = "runs/toy",
    config: str = "toy2d",
    overrides: list[str] | None = None,
    runtime: Runtime | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the toy model (or reuse it), evaluate and report base vs defense (checks included), draw the figure."""
    start = time.perf_counter()
    runtime = runtime or Runtime()
    log, device = runtime.log, runtime.device
    out = Path(out)
    preset = from_preset(config, overrides)
    train_set = load_dataset("toy2d", "train")
    train_config = TrainConfig.from_preset(preset, seed=seed)
    log(
        f"[1/3] training a 4-layer MLP with PGD ({train_config.attack_steps} steps of {train_config.attack_step_size} "
        f"at eps {train_config.eps}) on {len(train_set)} toy points"
    )
    model, _ = train(
        train_config, train_set, out / "model", val_set=None, runtime=runtime.quiet(), resume=True, dataset_name="toy2d"
    )
    run = load_run(preset, str(out / "model" / "model.pt"), dataset="toy2d", seed=seed)
    settings, test_set = run.settings, run.dataset
    log(
        f"[2/3] evaluating on {len(test_set)} test points: adversarial at eps {settings.eps}, defense lambda {settings.refine_eps}"
    )
    result = evaluate_and_report(run, out / "eval", runtime.quiet(), resume=False)
    if result is None or settings.defense is None:
        raise ValueError("the toy example evaluates the defense in one process (run it without torchrun, with a lambda)")
    model = run.model.to(device).eval()
    defense = AdversarialPnml.from_spec(model, settings.defense, bounds=None).eval()
    transfer = next(s for s in settings.attacks if s.defense == "transfer")
    x, y = as_tensors(test_set, device)
    x_adv = build_attack(transfer, settings.eps, None, seed)(model, x, y)
    mechanisms = select_mechanisms(model, defense, x, y, x_adv)
    log(f"[3/3] figure: {', '.join(mechanisms) or 'no mechanism sample found'}")
    figures = plot_mechanisms(model, mechanisms, out / "toy_mechanisms")
    tables = {suffix: out / "eval" / f"results.{suffix}" for suffix in ("md", "csv", "json", "png")}
    summary = {
        "accuracy": result.accuracy(),
        "mechanisms": mechanisms,
        "seconds": time.perf_counter() - start,
        "figures": [str(p) for p in figures],
        "tables": {k: str(v) for k, v in tables.items()},
    }
    (out / "toy.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"\n{markdown_table(result)}\n\n{summary['seconds']:.0f} s. Figure: {figures[0]} (and .pdf); table: {tables['md']}")
    return summary
