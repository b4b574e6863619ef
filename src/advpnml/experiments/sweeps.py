"""The paper's sweeps, base vs defense, each a table and a line plot.

- ``eps``:      robustness vs attack radius, best attack per model (Fig. 2)
- ``lam``:      natural and attacked accuracy vs the refinement strength lambda (Fig. 3)
- ``steps``:    refinement steps x step size, e.g. ``1x0.03, 2x0.015, 4x0.01`` (Fig. 4's table)
- ``k``:        accuracy and cost vs the number of hypotheses, top-k (Fig. 7)
- ``hsja-eps``: black-box HSJA accuracy vs eps (Fig. 6)

Every point is an ordinary resumable evaluation in ``OUT/<param>=<value>/``; the sweep reads
their records, so a stopped sweep continues where it was.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..config import EvalSettings
from ..data import LabeledDataset, dataset_bounds
from ..evaluation.engine import evaluate
from ..evaluation.reporting import pct
from ..jobs import Run
from ..models.layout import use_memory_format
from ..plotting import line_plot
from ..runtime import Runtime, silent

PARAMS = ("eps", "lam", "steps", "k", "hsja-eps")

_LABELS = {
    "eps": ("attack radius eps", "Fig. 2: robustness vs attack strength"),
    "lam": ("refinement strength lambda", "Fig. 3: accuracy vs lambda"),
    "steps": ("refinement steps x step size", "Fig. 4: refinement precision"),
    "k": ("hypotheses k (top-k labels refined)", "Fig. 7: accuracy vs number of hypotheses"),
    "hsja-eps": ("attack radius eps", "Fig. 6: HSJA (black-box) accuracy vs eps"),
}


def parse_steps(value: str) -> tuple[int, float]:
    """``"4x0.01"`` -> (4 steps, step size 0.01)."""
    try:
        steps, size = str(value).lower().split("x")
        return int(steps), float(size)
    except ValueError:
        raise ValueError(f"refinement setting {value!r} must look like STEPSxSIZE, e.g. 2x0.015") from None


def parse_values(param: str, raw: list[Any] | None) -> list[Any]:
    """The values of a sweep over ``param`` (from ``--values`` or the preset's ``[sweeps]``), typed and checked."""
    if param not in PARAMS:
        raise ValueError(f"unknown sweep parameter {param!r}; expected one of: {', '.join(PARAMS)}")
    if not raw:
        raise ValueError(
            f"no values for --param {param}: pass --values or add [sweeps] {param.replace('-', '_')} = [...] to the config"
        )
    values = [v.strip() if isinstance(v, str) else v for v in raw]
    if param == "steps":
        for v in values:
            parse_steps(v)
        return values
    try:
        return [int(v) if param == "k" else float(v) for v in values]
    except ValueError:
        raise ValueError(f"--values for {param} must be numbers, got {raw}") from None


def point_settings(base: EvalSettings, param: str, value: Any) -> EvalSettings:
    """The evaluation settings of one sweep point."""
    if param in ("eps", "hsja-eps"):
        # Step sizes scale with the radius: a fixed step of the reference eps leaves a larger ball
        # under-explored (40 x 0.01 barely crosses a 0.4 ball) and would flatter whichever model it hits.
        scale = float(value) / base.eps if base.eps > 0 else 1.0
        attacks = [
            replace(spec, params={**spec.params, "step_size": spec.params["step_size"] * scale})
            if "step_size" in spec.params
            else spec
            for spec in base.attacks
        ]
        return replace(base, eps=float(value), attacks=attacks)
    if param == "lam":
        return replace(base, refine_eps=float(value))
    if param == "steps":
        steps, size = parse_steps(value)
        return replace(base, refine_steps=steps, refine_eps=steps * size)
    if param == "k":
        return replace(base, top_k=int(value))
    raise ValueError(f"unknown sweep parameter {param!r}; expected one of: {', '.join(PARAMS)}")


def run_sweep(
    model: nn.Module,
    dataset: LabeledDataset,
    base: EvalSettings,
    param: str,
    values: list[Any],
    out: str | os.PathLike,
    runtime: Runtime | None = None,
    reference: float | None = None,
    paper_columns: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every value of ``param``; write ``sweep_<param>.md/.csv/.json`` and ``.png/.pdf`` into ``out``.

    ``paper_columns``: the paper's attacks among ``base.attacks``; when the run holds more (a strong
    suite), each row also gets ``<model>/Paper attacks``, the per-sample worst case over the paper's
    attacks alone, and the figure shows it beside the worst case over everything.
    Under torchrun (``runtime.dist``) each point's samples are sharded over the ranks; rank 0 writes.
    """
    runtime = (runtime or Runtime()).for_rank()
    log, device = runtime.log, runtime.device
    if param not in PARAMS:
        raise ValueError(f"unknown sweep parameter {param!r}; expected one of: {', '.join(PARAMS)}")
    if param == "hsja-eps":
        base = replace(base, attacks=[s for s in base.attacks if s.attack == "hsja"])
        if not base.attacks:
            raise ValueError("the hsja-eps sweep needs an HSJA column in the config's attacks")
    out = Path(out)
    model = model.to(device).eval()
    # resolved (and tried) once here; every point's evaluate then takes the layout as given
    memory_format = use_memory_format(
        model, device, runtime.memory_format, example=dataset[0][0].unsqueeze(0) if len(dataset) else None
    )
    point_runtime = replace(runtime, memory_format=memory_format, log=silent)
    _warm_up(model, dataset, device)
    rows = []
    for value in values:
        settings = point_settings(base, param, value)
        log(f"{param} = {value}: {len(dataset)} samples, attacks {', '.join(s.column for s in settings.attacks)}")
        start = time.perf_counter()
        result = evaluate(model, dataset, settings, out / f"{param}={value}", point_runtime)
        table = result.accuracy()
        row = {"value": value, "seconds": time.perf_counter() - start}
        for model_row, accs in table.items():
            for column, acc in accs.items():
                row[f"{model_row}/{column}"] = acc
            if paper_columns is not None and set(paper_columns) != {s.column for s in settings.attacks}:
                paper_ok = result.robust_over(model_row, ["Natural", *paper_columns])
                row[f"{model_row}/Paper attacks"] = paper_ok.float().mean().item()
        if "defense/Natural" in result.timings and result.samples_timed:  # a point resumed in part: its own samples
            row["defense_inference_s_per_sample"] = result.timings["defense/Natural"] / result.samples_timed
            row["base_inference_s_per_sample"] = result.timings["base/Natural"] / result.samples_timed
        rows.append(row)
        log(
            f"  base best {pct(row.get('base/Best attack'))}, defense best {pct(row.get('defense/Best attack'))} "
            f"({row['seconds']:.0f} s)"
        )
    if runtime.is_main:
        lam = "no defense" if base.refine_eps is None else f"lambda {base.refine_eps:g}"
        fixed = {"eps": lam, "hsja-eps": lam, "lam": f"eps {base.eps:g}", "steps": f"eps {base.eps:g}"}.get(
            param, f"eps {base.eps:g}, {lam}"
        )
        write_sweep(rows, param, out, reference, n=len(dataset), subtitle=f"{fixed}, {Path(base.model).name or 'model'}")
    return rows


def sweep_run(
    run: Run,
    param: str,
    values: list[Any],
    out: str | os.PathLike,
    runtime: Runtime,
    protocol: str = "strict",
    keep_hsja: bool = False,
) -> list[dict[str, Any]]:
    """``reproduce sweep``: :func:`run_sweep` over ``run`` (from :func:`advpnml.jobs.load_run`), the paper's setting
    marked, the per-sample worst case over the paper's columns beside the one over everything. HSJA has its own
    sweep (``hsja-eps``, Fig. 6): other sweeps drop it unless ``keep_hsja`` (the caller named it)."""
    settings = run.settings
    if param != "hsja-eps" and not keep_hsja:
        settings = replace(settings, attacks=[s for s in settings.attacks if s.attack != "hsja"])
    reference = {"eps": settings.eps, "hsja-eps": settings.eps, "lam": settings.refine_eps}.get(param)
    paper = {s.column for s in run.preset.attacks(None, "paper", protocol)}
    out = Path(out)
    runtime = runtime.for_rank()
    runtime.log(f"sweep over {param} = {values} on {settings.dataset} ({len(run.dataset)} samples{runtime.processes}) -> {out}")
    rows = run_sweep(
        run.model,
        run.dataset,
        settings,
        param,
        values,
        out,
        runtime,
        reference,
        paper_columns=[s.column for s in settings.attacks if s.column in paper],
    )
    runtime.log(f"wrote {out / ('sweep_' + param)}.md/.csv/.json/.png/.pdf")
    return rows


def _warm_up(model: nn.Module, dataset: LabeledDataset, device: str | torch.device) -> None:
    """One untimed defended pass, so the first point's time holds no one-off start-up cost."""
    from ..defense import AdversarialPnml

    x = torch.stack([dataset[i][0] for i in range(min(len(dataset), 4))]).to(device)
    with torch.no_grad():
        AdversarialPnml(model.to(device).eval(), 0.01, bounds=dataset_bounds(dataset))(x)


def write_sweep(
    rows: list[dict[str, Any]], param: str, out: Path, reference: float | None = None, n: int | None = None, subtitle: str = ""
) -> dict[str, Path]:
    """Table (Markdown, CSV, JSON) and line plot of a sweep."""
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    stem = out / f"sweep_{param}"
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    stem.with_suffix(".json").write_text(json.dumps({"param": param, "samples": n, "rows": rows}, indent=2) + "\n")
    columns = [k for k in keys if "/" in k]
    md = [
        f"# Sweep over {param} ({n} samples)",
        "",
        "| " + param + " | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for r in rows:
        md.append(f"| {r['value']} | " + " | ".join(pct(r.get(c)) for c in columns) + " |")
    if any("defense_inference_s_per_sample" in r for r in rows):
        md += ["", "| " + param + " | defense ms / sample | base ms / sample |", "|---|---|---|"]
        md += [
            f"| {r['value']} | {1e3 * r['defense_inference_s_per_sample']:.2f} | {1e3 * r['base_inference_s_per_sample']:.2f} |"
            for r in rows
            if "defense_inference_s_per_sample" in r
        ]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    xs = [r["value"] for r in rows]
    categorical = param == "steps"
    if param == "lam":  # Fig. 3: natural and PGD (transferred) accuracy of the defense, the base model's for reference
        series = {
            "base, natural": [r.get("base/Natural") for r in rows],
            "defense, natural": [r.get("defense/Natural") for r in rows],
        }
        if any(r.get("defense/PGD") is not None for r in rows):
            series["defense, PGD (transferred, as the paper's Fig. 3)"] = [r.get("defense/PGD") for r in rows]
        series["base, best attack"] = [r.get("base/Best attack") for r in rows]
        series["defense, best attack (every attack, per sample)"] = [r.get("defense/Best attack") for r in rows]
    else:
        series = {}
        if param == "eps":  # Fig. 2a (PGD) and 2b (the adaptive attack), as the paper draws them
            for key, label in (
                ("base/PGD", "base model, PGD"),
                ("defense/PGD", "Adversarial pNML, PGD (transferred)"),
                ("defense/Adaptive", "Adversarial pNML, adaptive"),
            ):
                if any(r.get(key) is not None for r in rows):
                    series[label] = [r.get(key) for r in rows]
        if any("base/Paper attacks" in r for r in rows):
            series["base model, paper's attacks (worst case)"] = [r.get("base/Paper attacks") for r in rows]
            series["Adversarial pNML, paper's attacks (worst case)"] = [r.get("defense/Paper attacks") for r in rows]
        series["base model, every attack (worst case)"] = [r.get("base/Best attack") for r in rows]
        series["Adversarial pNML, every attack (worst case)"] = [r.get("defense/Best attack") for r in rows]
    xlabel, title = _LABELS[param]
    paths = line_plot(
        xs,
        series,
        stem,
        xlabel,
        "accuracy (%)",
        f"{title} ({n} samples{', ' + subtitle if subtitle else ''})",
        marker_x=reference,
        categorical=categorical,
        log_x=param == "k" and max(map(float, xs)) >= 50,
    )
    if param == "k" and any("defense_inference_s_per_sample" in r for r in rows):
        cost = {
            "Adversarial pNML": [r.get("defense_inference_s_per_sample") for r in rows],
            "base model": [r.get("base_inference_s_per_sample") for r in rows],
        }
        line_plot(
            xs, cost, out / "sweep_k_cost", xlabel, "inference time (ms per sample)", "Cost vs number of hypotheses", scale=1000.0
        )
    return {"md": stem.with_suffix(".md"), "csv": stem.with_suffix(".csv"), "json": stem.with_suffix(".json"), "png": paths[0]}
