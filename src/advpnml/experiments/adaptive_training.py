"""Does training against the adaptive attack change the picture? (the paper's appendix A)

The paper's MNIST model spent its last 6 epochs training against the adaptive attack on the
*defended* model. This experiment takes a PGD-trained model, fine-tunes a copy against that attack,
and evaluates both, base vs defense, for several lambdas: PGD transferred from the base model,
the adaptive attack through the defense (cross-entropy and margin loss on log q) and the
per-sample worst case. It answers the first question a user asks: is the defense's gain a
property of the defense, or of a model trained for it?
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import from_preset
from ..data import load_dataset
from ..evaluation.engine import evaluate
from ..models import EXTERNAL_SOURCES, load_checkpoint, load_external
from ..plotting import line_plot
from ..runtime import Runtime, silent
from ..training.trainer import TrainConfig, train

COLUMNS = ("PGD", "Adaptive", "Adaptive-margin")


def run_adaptive_training(
    out: str | os.PathLike = "runs/adaptive-training",
    checkpoint: str | None = None,
    source: str | None = None,
    dataset: str = "mnist5k",
    data_dir: str | None = None,
    refine_eps_values: tuple[float, ...] = (0.01, 0.03, 0.1, 0.2),
    finetune_epochs: int = 2,
    finetune_steps: int = 5,
    finetune_refine_eps: float = 0.1,
    finetune_lr: float = 1e-4,
    train_samples: int = 4000,
    n: int = 200,
    config: str = "mnist5k",
    runtime: Runtime | None = None,
) -> list[dict[str, Any]]:
    """Train (or take) a PGD model, fine-tune it adaptively, evaluate both at each lambda of ``refine_eps_values``;
    write table and plot (its ``lam`` column is that lambda).

    Under torchrun (``runtime.dist``) training is data-parallel and evaluation sharded; rank 0 writes.
    """
    runtime = (runtime or Runtime()).for_rank()
    log, quiet = runtime.log, replace(runtime, log=silent, memory_format="contiguous")  # the layout results/ trained in
    start = time.perf_counter()
    out = Path(out)
    preset = from_preset(config)
    train_set = load_dataset(dataset, "train", data_dir, n=train_samples)
    test_set = load_dataset(dataset, "test", data_dir, n=n)
    if checkpoint is None:
        base_config = TrainConfig.from_preset(preset)
        log(f"[1/3] PGD-training the {config} recipe's {base_config.arch} ({base_config.epochs} epochs)")
        train(base_config, load_dataset("mnist5k", "train"), out / "pgd", runtime=quiet, resume=True, dataset_name="mnist5k")
        checkpoint, source = str(out / "pgd" / "model.pt"), None
        arch, arch_kwargs = base_config.arch, base_config.arch_kwargs
    else:
        log(f"[1/3] using {checkpoint}" + (f" (read as {source})" if source else ""))
    pgd_model = load_external(checkpoint, source) if source else load_checkpoint(checkpoint)[0]
    if source:
        spec = EXTERNAL_SOURCES.get(source)
        arch, arch_kwargs = (spec.arch, dict(spec.kwargs)) if spec else (source, {})
    elif checkpoint != str(out / "pgd" / "model.pt"):
        meta = load_checkpoint(checkpoint)[1]
        arch, arch_kwargs = meta["arch"], meta["kwargs"]
    training = preset.section("training")
    eps = training["eps"]
    finetune = TrainConfig(
        arch=arch,
        arch_kwargs=arch_kwargs or None,
        method="pgd",
        epochs=finetune_epochs,
        adaptive_epochs=finetune_epochs,
        batch_size=training.get("batch_size", 50),
        optimizer="adam",
        lr=finetune_lr,
        weight_decay=0.0,
        eps=eps,
        attack_steps=finetune_steps,
        attack_step_size=2.5 * eps / finetune_steps,
        refine_eps=finetune_refine_eps,
        init_from=checkpoint,
        init_source=source,
    )
    log(
        f"[2/3] fine-tuning a copy for {finetune_epochs} epochs against the adaptive attack on the defended model "
        f"(PGD-{finetune_steps} through the defense, lambda {finetune_refine_eps}, eps {eps}) on {len(train_set)} images"
    )
    adaptive_model, _ = train(finetune, train_set, out / "adaptive-finetuned", runtime=quiet, resume=True, dataset_name=dataset)
    models = {"PGD-trained": pgd_model, "+ adaptive fine-tuning": adaptive_model}
    rows = []
    log(
        f"[3/3] evaluating both models on {len(test_set)} {dataset} test images at eps {preset.eps}, "
        f"lambda in {list(refine_eps_values)}"
    )
    for name, model in models.items():
        for refine_eps in refine_eps_values:
            settings = preset.eval_settings(
                dataset, "test", len(test_set), refine_eps=refine_eps, only=list(COLUMNS), model=f"{name}:{checkpoint}"
            )
            slug = "pgd" if name == "PGD-trained" else "adaptive"
            result = evaluate(
                model, test_set, settings, out / "eval" / f"{slug}-lam={refine_eps}", replace(runtime, log=silent, progress=False)
            )
            table = result.accuracy()
            row: dict[str, Any] = {
                "model": name,
                "lam": refine_eps,
                "base natural": table["base"]["Natural"],
                "base PGD": table["base"]["PGD"],
                "base best": table["base"]["Best attack"],
                "defense natural": table["defense"]["Natural"],
                **{f"defense {c}": table["defense"][c] for c in COLUMNS},
                "defense best": table["defense"]["Best attack"],
            }
            rows.append(row)
            log(
                f"  {name:<24} lambda {refine_eps:<5g} base best {100 * row['base best']:5.1f}%  "
                f"defense best {100 * row['defense best']:5.1f}% (adaptive {100 * row['defense Adaptive']:.1f}%, "
                f"margin {100 * row['defense Adaptive-margin']:.1f}%)"
            )
    if runtime.is_main:
        write_adaptive_training(rows, out, len(test_set), dataset)
    log(f"done in {time.perf_counter() - start:.0f} s: {out / 'adaptive_training.md'} (and .csv, .json, .png, .pdf)")
    return rows


def write_adaptive_training(rows: list[dict[str, Any]], out: Path, n: int, dataset: str) -> None:
    """The comparison as Markdown, CSV, JSON and a line plot over lambda in ``out``."""
    keys = list(rows[0])
    with open(out / "adaptive_training.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    (out / "adaptive_training.json").write_text(json.dumps({"dataset": dataset, "samples": n, "rows": rows}, indent=2) + "\n")
    md = [
        f"# PGD-trained vs adaptively fine-tuned, base vs defense ({dataset}, {n} test samples)",
        "",
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
    ]
    for r in rows:
        md.append("| " + " | ".join(str(r[k]) if k in ("model", "lam") else f"{100 * r[k]:.1f}%" for k in keys) + " |")
    md += [
        "",
        "defense PGD: PGD computed on the base model, given to the defense (the paper's column). Adaptive: PGD through "
        "the defense, CE on log q (the paper's). Adaptive-margin: margin loss on log q. best: per-sample worst case.",
    ]
    (out / "adaptive_training.md").write_text("\n".join(md) + "\n")
    lams = sorted({r["lam"] for r in rows})
    series = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        by_lam = {r["lam"]: r for r in rows if r["model"] == model}
        series[f"{model}: defense best"] = [by_lam[lam]["defense best"] for lam in lams]
        series[f"{model}: base best"] = [by_lam[lam]["base best"] for lam in lams]
    line_plot(
        lams,
        series,
        out / "adaptive_training",
        "refinement strength lambda",
        "accuracy under the best attack (%)",
        f"Adaptive fine-tuning, base vs defense ({dataset}, {n} samples)",
        log_x=True,
    )
