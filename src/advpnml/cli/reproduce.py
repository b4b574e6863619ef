"""``advpnml reproduce``: the paper's Table 1, its sweeps, the mechanism, adaptive training, and the test-time
defenses side by side."""

from __future__ import annotations

import argparse

from ..config import DEFENSE_NAMES
from ..experiments.adaptive_training import run_adaptive_training
from ..experiments.defenses import SHIPPED, compare_defenses
from ..experiments.mechanism import WORST_CASE_COLUMNS, collect, run_mechanism
from ..experiments.sweeps import parse_values, sweep_run
from ..runtime import Runtime
from .arguments import (
    Groups,
    command,
    config_args,
    group,
    in_runtime,
    layout_arg,
)
from .evaluate import cmd_evaluate, preset_from_args, run_from_args


def cmd_table1(args: argparse.Namespace, runtime: Runtime) -> None:
    """``advpnml reproduce table1``: ``evaluate`` with the dataset's own preset (the paper's columns and numbers)."""
    if args.dataset is None:
        raise ValueError("reproduce table1 needs --dataset (its preset gives the paper's columns and numbers)")
    args.config, args.out = args.dataset, args.out or f"runs/table1-{args.dataset}"
    cmd_evaluate(args, runtime)


def cmd_sweep(args: argparse.Namespace, runtime: Runtime) -> None:
    """``advpnml reproduce sweep``: base vs defense over one parameter."""
    if args.protocol == "both":
        raise ValueError("reproduce sweep runs one protocol: --protocol strict or paper")
    preset = preset_from_args(args)
    values = parse_values(args.param, args.values.split(",") if args.values else preset.sweep_values(args.param))
    run = run_from_args(args, preset, args.protocol)
    sweep_run(
        run,
        args.param,
        values,
        args.out or f"runs/sweep-{run.settings.dataset}-{args.param}",
        runtime,
        args.protocol,
        keep_hsja=bool(args.attacks),
    )


def cmd_mechanism(args: argparse.Namespace, runtime: Runtime) -> None:
    """``advpnml reproduce mechanism``: the refinement per lambda, or (``--collect``) the rule over measured points."""
    if args.collect:
        path = collect(args.collect, args.out or "results/mechanism")
        print(f"{path.read_text()}\nwrote {path}")
        return
    preset = preset_from_args(args)
    lams = parse_values("lam", args.lams.split(",") if args.lams else preset.sweep_values("lam"))
    args.attacks, args.suite, args.cascade, args.protocol, args.no_defense = (
        ",".join(WORST_CASE_COLUMNS),
        "strong",
        True,
        "strict",
        False,
    )
    run = run_from_args(args, preset, "strict")
    run_mechanism(run, lams, args.out or f"runs/mechanism-{run.settings.dataset}", runtime, args.probe_steps)


def cmd_defenses(args: argparse.Namespace, runtime: Runtime) -> None:
    """``advpnml reproduce defenses``: every registry defense around every shipped model, one table."""
    path = compare_defenses(
        [m.strip() for m in args.models.split(",") if m.strip()],
        [d.strip() for d in args.defenses.split(",") if d.strip()],
        args.out,
        runtime,
        data_dir=args.data_dir,
        n=args.n,
        overrides=args.set,
        attacks=args.attacks.split(",") if args.attacks else None,
        cascade=not args.no_cascade,
        checks=args.checks,
        resume=not args.overwrite,
        step_rule=args.step_rule,
        collect=args.collect,
    )
    print(f"\n{path.read_text()}\nwrote {path} and beside it defenses.json, defenses.png")


def add_commands(sub: argparse._SubParsersAction, g: Groups) -> None:
    """Register reproduce, table1, sweep, mechanism, adaptive-training, defenses on ``sub`` (the shared argument groups in ``g``)."""
    experiments = command(
        sub,
        "reproduce",
        None,
        "the paper's Table 1, sweeps (Figs. 2-4, 6, 7), the adaptive-training comparison, test-time defenses side by side",
    ).add_subparsers(dest="experiment", required=True)
    command(
        experiments,
        "table1",
        in_runtime(cmd_table1),
        "Table 1's rows for base and defense, the paper's numbers beside ours",
        [g.model, g.data, g.paper_evaluation],
    )
    p = command(
        experiments,
        "sweep",
        in_runtime(cmd_sweep),
        "base vs defense over eps, lam, steps, k or HSJA eps: table, plot",
        [g.model, g.data, g.paper_evaluation],
    )
    p.add_argument("--param", required=True, choices=("eps", "lam", "steps", "k", "hsja-eps"), help="what the sweep varies")
    p.add_argument("--values", default=None, help="comma-separated (default: the config's [sweeps] values); steps as 2x0.015")
    p = command(
        experiments,
        "mechanism",
        in_runtime(cmd_mechanism),
        "what the refinement does per lambda (the two gains, "
        "saturation, the paper's mechanisms), the base model at eps and eps + lambda, the defense's worst case, and the "
        "rule that predicts it",
        [g.model, g.data, group(config_args)],
    )
    p.add_argument("--lams", default=None, help="comma-separated lambdas (default: the config's [sweeps] lam)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per batch (default: the config's)")
    p.add_argument("--seed", type=int, default=0, help="attack seed (default: %(default)s)")
    p.add_argument(
        "--probe-steps",
        type=int,
        default=100,
        help="steps of the attacks on the base model and of those the statistics are taken at (default: %(default)s)",
    )
    p.add_argument(
        "--collect",
        nargs="+",
        default=None,
        metavar="MECHANISM_JSON",
        help="instead: check the rule against these mechanism.json files and write rule.md to --out",
    )
    layout_arg(p, "auto")
    p.add_argument(
        "--out", default=None, help="output folder (default: runs/mechanism-DATASET; with --collect results/mechanism)"
    )
    p = command(
        experiments,
        "adaptive-training",
        in_runtime(
            lambda a, rt: run_adaptive_training(
                a.out,
                a.checkpoint,
                a.source,
                a.dataset,
                a.data_dir,
                tuple(float(v) for v in a.lams.split(",")),
                a.epochs,
                a.attack_steps,
                train_samples=a.train_samples,
                n=a.n,
                runtime=rt,
            )
        ),
        "PGD-trained vs fine-tuned against the adaptive attack, over lambda",
        [g.model, g.device],
    )
    p.add_argument("--dataset", "--data", dest="dataset", default="mnist5k", choices=("mnist5k", "mnist"))
    p.add_argument("--data-dir", default=None, help="folder with the MNIST files (--dataset mnist)")
    p.add_argument("--lams", default="0.01,0.03,0.1,0.2", help="comma-separated lambdas (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs against the adaptive attack (default: %(default)s)")
    p.add_argument("--attack-steps", type=int, default=5, help="PGD steps of the fine-tuning attack (default: %(default)s)")
    p.add_argument("--train-samples", type=int, default=4000, help="fine-tuning images (default: %(default)s)")
    p.add_argument("--samples", "--n", dest="n", type=int, default=200, help="test samples (default: %(default)s)")
    p.add_argument("--out", default="runs/adaptive-training", help="output folder (default: %(default)s)")
    p = command(
        experiments,
        "defenses",
        in_runtime(cmd_defenses),
        "the registry's test-time defenses side by side on the models we ship: table, figure, logs",
        [g.device],
    )
    p.add_argument("--models", default=",".join(SHIPPED), help="comma-separated, of: %(default)s")
    p.add_argument("--defenses", default=",".join(DEFENSE_NAMES), help="comma-separated, of: %(default)s")
    p.add_argument(
        "--data-dir", default="../shared/data", help="the folder with weights/, mnist/, cifar10/ (default: %(default)s)"
    )
    p.add_argument("--samples", "--n", dest="n", type=int, default=100, help="test images per model (default: %(default)s)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override every preset, e.g. a cut budget PGD.steps=20")
    p.add_argument("--attacks", default=None, help="comma-separated columns (each defense runs those it can; default: all)")
    p.add_argument("--no-cascade", action="store_true", help="every attack on every sample (far slower)")
    p.add_argument(
        "--collect",
        action="store_true",
        help="attack nothing: the table from the finished runs in OUT, each as it ran (a run of other settings "
        "than these arguments is named under the table)",
    )
    p.add_argument(
        "--step-rule", action="store_true", help="PGD-type columns step 2.5 * eps / steps at each model's eps (Madry et al.)"
    )
    p.add_argument("--checks", type=int, default=20, metavar="N", help="gradient-masking checks on the first N images")
    p.add_argument("--out", default="runs/defenses", help="output folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="start each run over instead of resuming it")
