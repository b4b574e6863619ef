"""``advpnml demo``: the main job on the embedded MNIST subset, end to end on a CPU in minutes.

Train (or reuse) a small PGD-trained Madry CNN on the 4,000 training images, then evaluate the
base model and the Adversarial pNML defense under FGSM, PGD, the adaptive attack and HSJA with
the reduced budgets of the ``mnist5k`` preset, and write the table. Like every preset it also runs
the margin-loss adaptive attack and APGD-T (transferred and through the defense): the attack that
decides the defense's worst case on every model we measured, so the headline number survives it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from .config import from_preset
from .data import load_dataset
from .evaluation.records import RunMismatchError
from .jobs import evaluate_and_report, load_run
from .runtime import Runtime
from .training.trainer import TrainConfig, train


def run_demo(out: Path, runtime: Runtime, retrain: bool = False, n: int | None = None) -> int:
    """Train (or reuse) the mnist5k model in ``out/model``, then evaluate and report base vs defense in ``out/eval``."""
    start = time.perf_counter()
    say = runtime.log
    preset = from_preset("mnist5k")
    checkpoint = out / "model" / "model.pt"
    if retrain or not checkpoint.exists():
        train_config = TrainConfig.from_preset(preset)
        say(
            f"[1/2] training {train_config.arch} (width {(train_config.arch_kwargs or {}).get('width')}) with PGD-{train_config.attack_steps} "
            f"at eps {train_config.eps} for {train_config.epochs} epochs on mnist5k train (4,000 images)"
        )
        # the contiguous layout, as the demo's recorded results were trained (see advpnml.training.trainer.train)
        train(
            train_config,
            load_dataset("mnist5k", "train"),
            out / "model",
            load_dataset("mnist5k", "test"),
            replace(runtime, memory_format="contiguous"),
            resume=True,
            dataset_name="mnist5k",
        )
    else:
        say(f"[1/2] reusing {checkpoint} (pass --retrain to train again)")
    run = load_run(preset, str(checkpoint), dataset="mnist5k", n=n)
    settings = run.settings
    say(
        f"[2/2] evaluating base vs Adversarial pNML (lambda={settings.refine_eps}) on {len(run.dataset)} test images, eps={settings.eps}"
    )
    say(
        "      the paper's columns at reduced budgets for a CPU (the paper: PGD 50x0.01 with 20 restarts, adaptive 300x0.01 with 20,"
    )
    say(
        "      HSJA 26K queries); beyond the paper, at AutoAttack's full budget (100 steps, all 9 targets): APGD-T (Croce & Hein),"
    )
    say(
        "      transferred and through the defense, the attack that decides the defense's worst case; the margin adaptive attack;"
    )
    say("      then the gradient-masking checks on the first 20 images")
    try:
        evaluate_and_report(run, out / "eval", runtime, checks=20)
    except RunMismatchError:
        say(f"      {out / 'eval'} holds a run with other settings or another model: starting it over")
        evaluate_and_report(run, out / "eval", runtime, resume=False, checks=20)
    say(f"\nfinished in {time.perf_counter() - start:.0f} s.")
    say(
        f"  table:           {out / 'eval' / 'results.md'} (also .csv, .json; per-sample records in {out / 'eval' / 'records.jsonl'})"
    )
    say(f"  figures:         {out / 'eval' / 'results.png'} (bars per attack), {out / 'model' / 'metrics.png'} (training curves)")
    say("Next steps:")
    say(f"  stronger attacks:   advpnml evaluate --checkpoint {checkpoint} --suite strong --out runs/strong")
    say(f"  the toy example:    advpnml toy;   sweeps: advpnml reproduce sweep --param eps --checkpoint {checkpoint}")
    say(
        "  full scale (GPU):   advpnml train --config mnist --data-dir DATA && advpnml reproduce table1 --dataset mnist "
        "--data-dir DATA --checkpoint runs/train-mnist-pgd/model.pt --device cuda"
    )
    return 0
