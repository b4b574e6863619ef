"""``advpnml demo``: the main job on the embedded MNIST subset, end to end on a CPU in minutes.

Train (or reuse) a small PGD-trained Madry CNN on the 4,000 training images, then evaluate the
base model and the Adversarial pNML defense under FGSM, PGD, the adaptive attack and HSJA with
the reduced budgets of the ``mnist5k`` preset, and write the table. Like every preset it also runs
the margin-loss adaptive attack and APGD-T (transferred and through the defense): the attack that
decides the defense's worst case on every model we measured, so the headline number survives it.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .config import attack_specs, load_config
from .data import load_dataset
from .evaluation import EvalSettings, evaluate
from .models import load_checkpoint
from .reporting import markdown_table, summary_table, write_report
from .training import TrainConfig, train


def run_demo(out: Path, device: torch.device, retrain: bool = False, n: int | None = None) -> int:
    start = time.perf_counter()
    config = load_config("mnist5k")
    checkpoint = out / "model" / "model.pt"
    if retrain or not checkpoint.exists():
        train_config = TrainConfig.from_config(config)
        print(f"[1/2] training {train_config.arch} (width {train_config.arch_kwargs.get('width')}) with PGD-{train_config.attack_steps} "
              f"at eps {train_config.eps} for {train_config.epochs} epochs on mnist5k train (4,000 images)")
        train(train_config, load_dataset("mnist5k", "train"), out / "model", load_dataset("mnist5k", "test"),
              device, resume=True, dataset_name="mnist5k")
    else:
        print(f"[1/2] reusing {checkpoint} (pass --retrain to train again)")
    model, _ = load_checkpoint(checkpoint, device)
    evaluation = config["evaluation"]
    dataset = load_dataset("mnist5k", "test", n=n or evaluation.get("n"))
    settings = EvalSettings("mnist5k", "test", len(dataset), evaluation["eps"], config["defense"]["refine_eps"],
                            attack_specs(config), batch_size=evaluation["batch_size"], model=str(checkpoint))
    print(f"[2/2] evaluating base vs Adversarial pNML (lambda={settings.refine_eps}) on {len(dataset)} test images, eps={settings.eps}")
    print("      the paper's columns at reduced budgets for a CPU (the paper: PGD 50x0.01 with 20 restarts, adaptive 300x0.01 with 20,")
    print("      HSJA 26K queries); beyond the paper, at AutoAttack's full budget (100 steps, all 9 targets): APGD-T (Croce & Hein),")
    print("      transferred and through the defense, the attack that decides the defense's worst case; the margin adaptive attack:")
    for spec in settings.attacks:
        print(f"      {spec.column:<9} {spec.attack} {spec.params} on base: {spec.base}, on defense: {spec.defense}")
    try:
        result = evaluate(model, dataset, settings, out / "eval", device)
    except ValueError as err:
        if "other settings" not in str(err):
            raise
        print(f"      {out / 'eval'} holds a run with other settings: starting it over")
        result = evaluate(model, dataset, settings, out / "eval", device, resume=False)
    paths = write_report(result, out / "eval")
    print()
    print(markdown_table(result))
    print()
    print(summary_table(result))
    print(f"\nfinished in {time.perf_counter() - start:.0f} s.")
    print(f"  table:           {paths['md']} (also .csv, .json; per-sample records in {out / 'eval' / 'records.jsonl'})")
    print(f"  figures:         {paths['png']} (bars per attack), {out / 'model' / 'metrics.png'} (training curves)")
    print("Next steps:")
    print("  stronger attacks:   advpnml evaluate --checkpoint " f"{checkpoint} --suite strong --out runs/strong")
    print("  the toy example:    advpnml toy;   sweeps: advpnml reproduce sweep --param eps --checkpoint " f"{checkpoint}")
    print("  full scale (GPU):   advpnml train --config mnist --data-dir DATA && advpnml reproduce table1 --dataset mnist "
          "--data-dir DATA --checkpoint runs/train-mnist-pgd/model.pt --device cuda")
    return 0
