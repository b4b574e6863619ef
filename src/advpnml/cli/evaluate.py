"""``advpnml predict``, ``evaluate`` and ``detect``: a run of the user's model and data, its arguments beside it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..accel.precision import PRECISIONS
from ..config import Preset
from ..experiments.detection import detect
from ..jobs import Run, choose_preset, evaluate_and_report, evaluate_protocols, load_data, load_model, load_run, predict
from ..runtime import Runtime
from .arguments import (
    Groups,
    command,
    config_args,
    defense_arg,
    group,
    in_runtime,
    normalization,
)


def run_from_args(args: argparse.Namespace, preset: Preset, protocol: str) -> Run:
    """The run the evaluation arguments describe under ``protocol``."""
    only = args.attacks.split(",") if args.attacks else None
    if only and args.protocol == "both":  # one --attacks list for both protocols: each runs the columns it has
        only = preset.columns_under(only, args.suite or preset.default_suite, protocol)
    return load_run(
        preset,
        args.checkpoint,
        args.source,
        model_spec=args.model,
        normalize=normalization(args),
        dataset=args.dataset,
        split=args.split,
        data_dir=args.data_dir,
        download=args.download,
        n=args.n,
        image_size=args.image_size,
        eps=args.eps,
        refine_eps=args.lam,
        defended=not args.no_defense,
        only=only,
        suite=args.suite,
        protocol=protocol,
        batch_size=args.batch_size,
        seed=args.seed,
        cascade=args.cascade,
        defense=getattr(args, "defense", None),
    )


def preset_from_args(args: argparse.Namespace) -> Preset:
    """The preset the arguments choose (``--config``, else the dataset's, else the generic suite), ``--set`` applied."""
    return choose_preset(args.config, args.dataset, args.eps, args.lam, args.set)


def cmd_predict(args: argparse.Namespace, runtime: Runtime) -> None:
    """``advpnml predict``: clean accuracy of the model and of its defense."""
    model, meta = load_model(args.checkpoint, args.source, args.model, normalization(args))
    name = args.dataset or meta.get("dataset") or "mnist5k"
    preset = choose_preset(args.config, name, args.eps, args.lam, args.set)  # lambda: --lam, else the preset's
    defense = preset.defense(args.lam, refine_steps=args.refine_steps, top_k=args.top_k)
    dataset = load_data(name, args.split, args.data_dir, args.download, args.n, args.image_size)
    found = predict(model, dataset, defense, runtime, args.batch_size, meta)
    print(
        f"{dataset.info.name} {args.split}, {found['samples']} samples, lambda={defense.refine_eps:g}, {found['seconds']:.1f} s"
    )
    print(f"  base model accuracy:       {100 * found['base']:.2f}%\n  Adversarial pNML accuracy: {100 * found['defense']:.2f}%")


def cmd_evaluate(args: argparse.Namespace, runtime: Runtime) -> None:
    """``advpnml evaluate``: the run the arguments describe, evaluated and reported (one protocol or both)."""
    preset = preset_from_args(args)
    both = args.protocol == "both"
    data = args.dataset or preset.dataset
    out = Path(args.out or ("runs/eval-protocols" if both else f"runs/eval-{Path(data).stem if data else 'data'}"))
    if both:
        evaluate_protocols(lambda protocol: run_from_args(args, preset, protocol), out, runtime, not args.overwrite, args.checks)
    else:
        evaluate_and_report(run_from_args(args, preset, args.protocol), out, runtime, not args.overwrite, args.checks)


def add_commands(sub: argparse._SubParsersAction, g: Groups) -> None:
    """Register predict, evaluate, detect on ``sub`` (the shared argument groups in ``g``)."""
    p = command(
        sub,
        "predict",
        in_runtime(cmd_predict),
        "accuracy of a checkpoint and of its defense on a dataset split",
        [g.model, g.data, group(lambda q: config_args(q, None))],
    )
    for flag in ("--refine-steps", "--top-k"):
        p.add_argument(flag, type=int, default=None, help="default: the config's")
    p.add_argument("--batch-size", type=int, default=100, help="samples per batch (default: %(default)s)")
    p = command(
        sub,
        "evaluate",
        in_runtime(cmd_evaluate),
        "robust accuracy of base and defense under the config's attacks",
        [g.model, g.data, g.evaluation],
    )
    p.add_argument("--no-defense", action="store_true", help="evaluate the base model only")
    defense_arg(p)
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: autocast the classifier; with --no-defense only (results/precision_agreement_cpu; default: %(default)s)",
    )
    p = command(
        sub,
        "detect",
        in_runtime(
            lambda a, rt: detect(run_from_args(a, preset_from_args(a), "strict"), a.out, rt, a.steps, a.beta, a.batch_size)
        ),
        "the pNML regret as an adversarial-input detector: ROC AUC, detection at 5%% FPR, ROC plot",
        [g.model, g.data, group(config_args)],
    )
    p.add_argument("--steps", type=int, default=40, help="steps of each attack (default: %(default)s)")
    p.add_argument("--beta", type=float, default=1.0, help="regret weight of the detector-aware attack (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=100, help="samples per attack batch (default: %(default)s)")
    p.add_argument("--out", default=None, help="output folder (default: runs/detect-DATASET)")
    p.set_defaults(attacks=None, suite="paper", protocol="strict", seed=0, cascade=False, no_defense=False)
