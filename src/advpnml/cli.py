"""``advpnml``: argument wiring over :mod:`advpnml.jobs` and the experiments; each command is a few lines."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .accel.allocator import tune_cpu_allocator
from .accel.precision import PRECISIONS
from .bench.speed import format_table, run_benchmark
from .config import DEFENSE_NAMES, PROTOCOLS, SUITES, Preset, from_preset, list_configs
from .data import DATASETS, DataFileError, load_dataset
from .demo import run_demo
from .experiments.adaptive_training import run_adaptive_training
from .experiments.defenses import SHIPPED, compare_defenses
from .experiments.detection import detect
from .experiments.mechanism import WORST_CASE_COLUMNS, collect, run_mechanism
from .experiments.sweeps import parse_values, sweep_run
from .experiments.toy import run_toy
from .jobs import (
    Run,
    choose_preset,
    describe,
    evaluate_and_report,
    evaluate_protocols,
    load_data,
    load_model,
    load_run,
    predict,
)
from .models import EXTERNAL_SOURCES, MEMORY_FORMATS, CheckpointError
from .runtime import Runtime, start_runtime
from .training.trainer import TrainConfig, train
from .version import __version__


def _in_runtime(job):
    """A command running ``job(args, runtime)`` in the runtime its ``--device`` (and ``--memory-format``) ask for."""

    def command(args: argparse.Namespace) -> int:
        with start_runtime(
            args.device,
            getattr(args, "memory_format", "auto"),
            precision=getattr(args, "precision", "fp32"),
            cuda_graphs=getattr(args, "cuda_graphs", False),
        ) as runtime:
            job(args, runtime)
        return 0

    return command


def cmd_predict(args: argparse.Namespace, runtime: Runtime) -> None:
    """``advpnml predict``: clean accuracy of the model and of its defense."""
    model, meta = load_model(args.checkpoint, args.source, args.model, _normalization(args))
    name = args.dataset or meta.get("dataset") or "mnist5k"
    preset = choose_preset(args.config, name, args.eps, args.lam, args.set)  # lambda: --lam, else the preset's
    defense = preset.defense(args.lam, refine_steps=args.refine_steps, top_k=args.top_k)
    dataset = load_data(name, args.split, args.data_dir, args.download, args.n, args.image_size)
    found = predict(model, dataset, defense, runtime, args.batch_size, meta)
    print(
        f"{dataset.info.name} {args.split}, {found['samples']} samples, lambda={defense.refine_eps:g}, {found['seconds']:.1f} s"
    )
    print(f"  base model accuracy:       {100 * found['base']:.2f}%\n  Adversarial pNML accuracy: {100 * found['defense']:.2f}%")


def _normalization(args: argparse.Namespace) -> tuple[list[float], list[float]] | None:
    """``--mean``/``--std`` as the (mean, std) pair a model expecting normalized inputs is wrapped with."""
    if (args.mean is None) != (args.std is None):
        raise ValueError("--mean and --std go together (the normalization your model expects)")
    return None if args.mean is None else (args.mean, args.std)


def cmd_train(args: argparse.Namespace, runtime: Runtime) -> None:
    """``advpnml train``: train a model by the config's recipe into ``--out``."""
    preset = from_preset(args.config, args.set)
    config = TrainConfig.from_preset(preset, method=args.method, epochs=args.epochs, seed=args.seed)
    name = args.dataset or preset.dataset or "mnist5k"
    train_set = load_dataset(name, args.split, args.data_dir, args.download, args.n)
    val_set = load_dataset(name, "test", args.data_dir, args.download, args.val_n)
    out = Path(args.out or f"runs/train-{name}-{config.method}")
    runtime.log(f"training {config.arch} with {config.method} on {name} ({len(train_set)} samples{runtime.processes}) -> {out}")
    start = time.perf_counter()
    _, history = train(
        config,
        train_set,
        out,
        val_set,
        runtime,
        args.resume,
        dataset_name=name,
        time_limit=60 * args.time_limit if args.time_limit else None,
    )
    model_file = out / ("model.pt" if len(history) == config.epochs else "last.pt")
    runtime.log(f"done in {time.perf_counter() - start:.0f} s: {model_file}, {out / 'metrics.csv'}, {out / 'metrics.png'}")


def _load_run(args: argparse.Namespace, preset: Preset, protocol: str) -> Run:
    """The run the evaluation arguments describe under ``protocol``."""
    only = args.attacks.split(",") if args.attacks else None
    if only and args.protocol == "both":  # one --attacks list for both protocols: each runs the columns it has
        only = preset.columns_under(only, args.suite or preset.default_suite, protocol)
    return load_run(
        preset,
        args.checkpoint,
        args.source,
        model_spec=args.model,
        normalize=_normalization(args),
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


def _preset(args: argparse.Namespace) -> Preset:
    return choose_preset(args.config, args.dataset, args.eps, args.lam, args.set)


def cmd_evaluate(args: argparse.Namespace, runtime: Runtime) -> None:
    """``advpnml evaluate``: the run the arguments describe, evaluated and reported (one protocol or both)."""
    preset = _preset(args)
    both = args.protocol == "both"
    data = args.dataset or preset.dataset
    out = Path(args.out or ("runs/eval-protocols" if both else f"runs/eval-{Path(data).stem if data else 'data'}"))
    if both:
        evaluate_protocols(lambda protocol: _load_run(args, preset, protocol), out, runtime, not args.overwrite, args.checks)
    else:
        evaluate_and_report(_load_run(args, preset, args.protocol), out, runtime, not args.overwrite, args.checks)


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
    preset = _preset(args)
    values = parse_values(args.param, args.values.split(",") if args.values else preset.sweep_values(args.param))
    run = _load_run(args, preset, args.protocol)
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
    preset = _preset(args)
    lams = parse_values("lam", args.lams.split(",") if args.lams else preset.sweep_values("lam"))
    args.attacks, args.suite, args.cascade, args.protocol, args.no_defense = (
        ",".join(WORST_CASE_COLUMNS),
        "strong",
        True,
        "strict",
        False,
    )
    run = _load_run(args, preset, "strict")
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
    )
    print(f"\n{path.read_text()}\nwrote {path} and beside it defenses.json, defenses.png")


def cmd_bench(args: argparse.Namespace, runtime: Runtime) -> None:
    """``advpnml bench``: speed of the defense and the attacks on this machine."""
    print(
        f"benchmarking on {runtime.device} with {args.threads or torch.get_num_threads()} threads, median of {args.repeats} runs"
    )
    result = run_benchmark(
        args.models.split(",") if args.models else None,
        runtime.device,
        args.threads,
        args.repeats,
        args.batch,
        args.out,
        loops=not args.skip_loops,
        memory_format=runtime.memory_format,
        accel=args.accel,
    )
    print(f"\n{format_table(result)}\n\n{result['seconds']:.0f} s; wrote {args.out}")


def _group(*adders) -> argparse.ArgumentParser:
    """A parent parser holding the arguments ``adders`` declare (shared by every command that takes them)."""
    parent = argparse.ArgumentParser(add_help=False)
    for add in adders:
        add(parent)
    return parent


def _layout_arg(p: argparse.ArgumentParser, default: str, note: str = "") -> None:
    p.add_argument(
        "--memory-format",
        default=default,
        choices=MEMORY_FORMATS,
        help=f"model layout: auto is channels_last for conv models on CPU (same values, faster){note} (default: %(default)s)",
    )


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        default=None,
        help="an advpnml checkpoint; an external state dict with --source; or, with "
        "--model, a plain state dict (or one under 'state_dict' or 'model') of your class (optional for a source "
        "whose package ships its file: autoattack_resnet18)",
    )
    p.add_argument("--source", default=None, help=f"read --checkpoint as: {', '.join(EXTERNAL_SOURCES)} or an architecture")
    p.add_argument(
        "--model",
        default=None,
        metavar="FILE.py:NAME",
        help="your own model: NAME() (a class or function in "
        "FILE.py, or package.module:NAME) builds it; imports and runs that file, as you ask",
    )
    p.add_argument(
        "--mean",
        type=_floats,
        default=None,
        help="per-channel mean your model expects its inputs normalized "
        "with, e.g. 0.4914,0.4822,0.4465 (with --std; inputs stay in [0, 1])",
    )
    p.add_argument("--std", type=_floats, default=None, help="per-channel std, with --mean")


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _data_args(p: argparse.ArgumentParser, split: str = "test") -> None:
    p.add_argument(
        "--data",
        "--dataset",
        dest="dataset",
        default=None,
        metavar="NAME_OR_PATH",
        help=f"a dataset "
        f"({', '.join(DATASETS)}; default: the config's) or your own: a .npz/.pt file holding x (N, C, H, W; "
        "uint8 or floats in [0, 1]) and y, or an image folder (one subfolder per class, with --image-size)",
    )
    p.add_argument("--image-size", type=int, default=None, help="side an image folder's images are resized and cropped to")
    p.add_argument("--split", default=split, help="dataset split (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files (mnist, cifar10, imagenet)")
    p.add_argument("--download", action="store_true", help="download missing dataset files (needs a network)")
    # "--samples": under torchrun a bare "--n" is an ambiguous abbreviation of torchrun's own options.
    p.add_argument("--samples", "--n", dest="n", type=int, default=None, help="use the first N samples")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K (default: %(default)s)")


def _config_args(p: argparse.ArgumentParser, default: str | None = None, defense: bool = True) -> None:
    p.add_argument(
        "--config",
        default=default,
        help=f"preset ({', '.join(list_configs())}) or a .toml file (default: "
        + (
            default
            or "the named dataset's preset, mnist5k when none is named; for a data file of your own, the "
            "generic suite with budgets from --eps"
        )
        + ")",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. PGD.restarts=2 or training.lr=0.05")
    if defense:
        p.add_argument("--eps", type=float, default=None, help="attack radius (default: the config's)")
        p.add_argument("--lam", type=float, default=None, help="refinement strength lambda (default: the config's refine_eps)")


def _eval_args(p: argparse.ArgumentParser, suite: str | None = None) -> None:
    p.add_argument(
        "--attacks",
        default=None,
        help="comma-separated columns to run, in order (quote names with spaces); "
        f"the image presets' are: {', '.join(s.column for s in from_preset('mnist').attacks(suite='autoattack'))}",
    )
    p.add_argument("--batch-size", type=int, default=None, help="samples per batch (default: the config's)")
    p.add_argument("--seed", type=int, default=0, help="attack seed; each batch's derives from it (default: %(default)s)")
    p.add_argument(
        "--suite",
        default=suite,
        choices=SUITES,
        help="paper: the paper's attacks + margin adaptive + APGD-T; strong: + APGD-CE, the exact-clip and second-order "
        "adaptive attacks, joint hypotheses, Square; autoattack: + the reference AutoAttack (default: strong, as "
        "advpnml.evaluate, or a config's own attacks when it has no [[evaluation.strong]]; reproduce table1 and "
        "sweep: paper, the paper's columns)",
    )
    p.add_argument(
        "--cascade",
        action="store_true",
        help="AutoAttack's protocol: each attack runs only on what earlier columns "
        "left correct (same worst case, far cheaper; columns become cumulative)",
    )
    p.add_argument(
        "--protocol",
        default="strict",
        choices=(*PROTOCOLS, "both"),
        help="strict: ours; paper: the paper's columns as "
        "its official code runs them; both: the two side by side in protocols.md (default: %(default)s)",
    )
    p.add_argument("--checks", type=int, default=50, metavar="N", help="gradient-masking checks on the first N samples (0: skip)")
    _layout_arg(p, "auto")
    p.add_argument("--out", default=None, help="output folder (default: runs/eval-DATASET, runs/table1-DATASET, runs/sweep-...)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming OUT/records.jsonl")
    p.set_defaults(no_defense=False)


def _defense_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--defense",
        default=None,
        metavar="NAME|FILE.py:NAME",
        help=f"the test-time defense: {', '.join(DEFENSE_NAMES)}, or your own (NAME(model) returns the defended "
        "module); its parameters: --set defense.NAME.KEY=VALUE (default: the config's [defense] name, else pnml)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``advpnml`` argument parser: every command and its options."""
    parser = argparse.ArgumentParser(prog="advpnml", description="Adversarial pNML: defense, attacks and honest evaluation.")
    parser.add_argument("--version", action="version", version=f"advpnml {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    model, data, train_data = _group(_model_args), _group(_data_args), _group(lambda p: _data_args(p, "train"))
    config = _group(lambda q: _config_args(q, "mnist5k", defense=False))
    # each command's own copy: argparse shares a parent's actions, so one default set on it would be every command's
    evaluation, paper_evaluation = _group(_config_args, _eval_args), _group(_config_args, lambda q: _eval_args(q, "paper"))
    device = _group(lambda q: q.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K (default: %(default)s)"))

    def command(parent, name: str, func, help: str, parents=()) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, parents=list(parents))
        if func is not None:
            p.set_defaults(func=func)
        return p

    command(
        sub, "info", lambda a: print(describe(a.data_dir)) or 0, "versions, device, architectures, presets, datasets found"
    ).add_argument("--data-dir", help="folder to look for datasets in")
    p = command(
        sub,
        "predict",
        _in_runtime(cmd_predict),
        "accuracy of a checkpoint and of its defense on a dataset split",
        [model, data, _group(lambda q: _config_args(q, None))],
    )
    for flag in ("--refine-steps", "--top-k"):
        p.add_argument(flag, type=int, default=None, help="default: the config's")
    p.add_argument("--batch-size", type=int, default=100, help="samples per batch (default: %(default)s)")
    p = command(
        sub, "train", _in_runtime(cmd_train), "standard, PGD or fast adversarial training (resumable)", [config, train_data]
    )
    p.add_argument("--method", choices=("standard", "pgd", "fast"), default=None, help="default: the config's")
    for flag in ("--epochs", "--seed"):
        p.add_argument(flag, type=int, default=None, help="default: the config's")
    p.add_argument("--val-n", type=int, default=1000, help="held-out samples for the final validation")
    p.add_argument("--out", default=None, help="output folder (checkpoints, metrics.csv, metrics.png)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="MINUTES",
        help="stop before an epoch that would end past this many minutes; --resume continues",
    )
    _layout_arg(p, "contiguous", " (auto trains ~1.2x faster on CPU, but not the model results/ records)")
    p.add_argument("--cuda-graphs", action="store_true", help="capture each PGD-training step as one CUDA graph (same values)")
    p = command(
        sub,
        "evaluate",
        _in_runtime(cmd_evaluate),
        "robust accuracy of base and defense under the config's attacks",
        [model, data, evaluation],
    )
    p.add_argument("--no-defense", action="store_true", help="evaluate the base model only")
    _defense_arg(p)
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: autocast the classifier; with --no-defense only (results/precision_agreement_cpu; default: %(default)s)",
    )
    p = command(
        sub,
        "toy",
        _in_runtime(lambda a, rt: run_toy(a.out, a.config, a.set, rt, a.seed)),
        "the paper's 2-D toy example (Fig. 1): table and probability-surface figure",
        [_group(lambda q: _config_args(q, "toy2d", False))],
    )
    p.add_argument("--out", default="runs/toy", help="output folder (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="default: %(default)s (a 4-layer MLP: the CPU is fastest)")
    p.add_argument("--seed", type=int, default=0, help="training and attack seed (default: %(default)s)")

    experiments = command(
        sub,
        "reproduce",
        None,
        "the paper's Table 1, sweeps (Figs. 2-4, 6, 7), the adaptive-training comparison, test-time defenses side by side",
    ).add_subparsers(dest="experiment", required=True)
    command(
        experiments,
        "table1",
        _in_runtime(cmd_table1),
        "Table 1's rows for base and defense, the paper's numbers beside ours",
        [model, data, paper_evaluation],
    )
    p = command(
        experiments,
        "sweep",
        _in_runtime(cmd_sweep),
        "base vs defense over eps, lam, steps, k or HSJA eps: table, plot",
        [model, data, paper_evaluation],
    )
    p.add_argument("--param", required=True, choices=("eps", "lam", "steps", "k", "hsja-eps"), help="what the sweep varies")
    p.add_argument("--values", default=None, help="comma-separated (default: the config's [sweeps] values); steps as 2x0.015")
    p = command(
        experiments,
        "mechanism",
        _in_runtime(cmd_mechanism),
        "what the refinement does per lambda (the two gains, "
        "saturation, the paper's mechanisms), the base model at eps and eps + lambda, the defense's worst case, and the "
        "rule that predicts it",
        [model, data, _group(_config_args)],
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
    _layout_arg(p, "auto")
    p.add_argument(
        "--out", default=None, help="output folder (default: runs/mechanism-DATASET; with --collect results/mechanism)"
    )
    p = command(
        experiments,
        "adaptive-training",
        _in_runtime(
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
        [model, device],
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
        _in_runtime(cmd_defenses),
        "the registry's test-time defenses side by side on the models we ship: table, figure, logs",
        [device],
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
    p.add_argument("--checks", type=int, default=20, metavar="N", help="gradient-masking checks on the first N images")
    p.add_argument("--out", default="runs/defenses", help="output folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="start each run over instead of resuming it")
    p = command(
        sub,
        "detect",
        _in_runtime(lambda a, rt: detect(_load_run(a, _preset(a), "strict"), a.out, rt, a.steps, a.beta, a.batch_size)),
        "the pNML regret as an adversarial-input detector: ROC AUC, detection at 5%% FPR, ROC plot",
        [model, data, _group(_config_args)],
    )
    p.add_argument("--steps", type=int, default=40, help="steps of each attack (default: %(default)s)")
    p.add_argument("--beta", type=float, default=1.0, help="regret weight of the detector-aware attack (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=100, help="samples per attack batch (default: %(default)s)")
    p.add_argument("--out", default=None, help="output folder (default: runs/detect-DATASET)")
    p.set_defaults(attacks=None, suite="paper", protocol="strict", seed=0, cascade=False, no_defense=False)
    p = command(
        sub,
        "bench",
        _in_runtime(cmd_bench),
        "speed of the defense vs its floor and naive loops, top-k, PGD vs torchattacks",
        [device],
    )
    p.add_argument("--models", default=None, help="comma-separated: mnist_cnn, preact_resnet18, wrn_28_10, mnist_cnn_100")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement, after one warm-up (default: %(default)s)")
    p.add_argument("--batch", type=int, default=None, help="batch size for every model (default: per model and device)")
    p.add_argument("--skip-loops", action="store_true", help="skip the naive reference loops (a quick re-check)")
    p.add_argument(
        "--accel", action="store_true", help="add FLOPs, TFLOP/s, peak fraction and bf16/channels_last/CUDA-graph rows"
    )
    _layout_arg(p, "auto", "; the references use the fastest")
    p.add_argument("--out", default="runs/bench.json", help="JSON output (default: %(default)s)")
    p = command(
        sub,
        "demo",
        _in_runtime(lambda a, rt: run_demo(Path(a.out), rt, a.retrain, a.n)),
        "train a small robust MNIST model on the embedded data and evaluate base vs defense",
        [device],
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    p.add_argument("--samples", "--n", dest="n", type=int, default=None, help="test samples (default: the mnist5k config's)")
    p.add_argument("--retrain", action="store_true", help="train again even if OUT/model/model.pt exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` names; errors a user can fix are one line on stderr (exit 2)."""
    args = build_parser().parse_args(argv)
    tune_cpu_allocator()  # this process is ours: reuse freed CPU tensor memory (see advpnml.accel.allocator)
    try:
        return args.func(args)
    except (ValueError, CheckpointError, DataFileError, ImportError) as err:
        print(f"\nadvpnml {args.command}: error: {err}", file=sys.stderr)  # below any progress bar, never on it
        return 2
    except OSError as err:  # a full disk or a read-only folder anywhere a file is written: one line, not a traceback
        where = f" ({err.filename})" if err.filename else ""
        print(f"\nadvpnml {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = args.command in ("evaluate", "reproduce", "train", "demo")
        print(
            "\ninterrupted; "
            + (
                "every finished batch (training: epoch) is saved in the output folder and the same command "
                "resumes after it; the one in progress is redone"
                if resumable
                else "nothing was saved"
            ),
            file=sys.stderr,
        )
        return 130
