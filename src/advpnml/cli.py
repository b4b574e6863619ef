"""``advpnml``: a thin command line over the library (every command is a few lines of Python too)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import __version__
from .allocator import tune_cpu_allocator
from .config import PROTOCOLS, SUITES, apply_overrides, attack_specs, list_configs, load_config, protocol_bpda
from .data import DATASETS, DataFileError, load_dataset
from .defense import AdversarialPnml
from .distributed import init_distributed, shutdown_distributed
from .evaluation import EvalSettings, build_attack, evaluate, resolve_device
from .models import (MEMORY_FORMATS, CheckpointError, EXTERNAL_SOURCES, default_checkpoint, list_models, load_checkpoint,
                     load_external, use_memory_format)
from .protocols import write_comparison
from .reporting import markdown_table, summary_table, write_report
from .training import TrainConfig, train


def _add_data_args(p: argparse.ArgumentParser, default_split: str = "test") -> None:
    p.add_argument("--data", "--dataset", dest="dataset", default=None, choices=DATASETS, help="dataset (default: the config's)")
    p.add_argument("--split", default=default_split, help="dataset split (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files (mnist, cifar10, imagenet)")
    p.add_argument("--download", action="store_true", help="download missing dataset files (needs a network)")
    # "--samples": under torchrun a bare "--n" is an ambiguous abbreviation of torchrun's own options.
    p.add_argument("--samples", "--n", dest="n", type=int, default=None, help="use the first N samples")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K (default: %(default)s)")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eps", type=float, default=None, help="attack radius (default: the config's)")
    p.add_argument("--lam", type=float, default=None, help="refinement strength (default: the config's)")
    p.add_argument("--attacks", default=None, help="comma-separated columns to run, e.g. FGSM,PGD")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. PGD.restarts=2 or Adaptive.steps=100")
    p.add_argument("--suite", default="paper", choices=SUITES,
                   help="paper: the paper's attacks + margin adaptive + APGD-T; strong: + APGD-CE (transfer and adaptive), "
                        "joint hypotheses, Square; autoattack: + the reference AutoAttack on base and defense "
                        "(pip install 'advpnml[autoattack]') (default: %(default)s)")
    p.add_argument("--cascade", action="store_true",
                   help="AutoAttack's protocol: each attack runs only on the samples every earlier column left correct "
                        "(same worst case, far cheaper; columns become cumulative; the reference AutoAttack still sees all)")
    p.add_argument("--protocol", default="strict", choices=(*PROTOCOLS, "both"),
                   help="strict: our attacks; paper: the paper's columns as its official code runs them (clamp-in-graph "
                        "BPDA, highest-final-loss restarts, its step counts, min-distance HSJA); both: the two runs side "
                        "by side in protocols.md (default: %(default)s)")
    p.add_argument("--checks", type=int, default=50, metavar="N",
                   help="gradient-masking checks on the first N samples, in the report (0: skip; default: %(default)s)")
    p.add_argument("--memory-format", default="auto", choices=MEMORY_FORMATS,
                   help="model layout: auto is channels_last for conv models on CPU (same values, faster; default: %(default)s)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="an advpnml checkpoint, or an external state dict with --source (optional for a source whose "
                        "package ships its file: autoattack_resnet18)")
    p.add_argument("--source", default=None, help=f"read --checkpoint as an external file: {', '.join(EXTERNAL_SOURCES)} or an architecture")


def _load_model(args: argparse.Namespace):
    if args.source:
        if args.checkpoint is None:
            args.checkpoint = str(default_checkpoint(args.source))
        return load_external(args.checkpoint, args.source), {"arch": args.source, "source": args.checkpoint}
    if args.checkpoint is None:
        raise CheckpointError("--checkpoint is required (or --source autoattack_resnet18, whose package ships its file)")
    return load_checkpoint(args.checkpoint)


def cmd_info(args: argparse.Namespace) -> int:
    print(f"advpnml {__version__}  torch {torch.__version__}  python {sys.version.split()[0]}")
    print(f"device: {'cuda (' + torch.cuda.get_device_name(0) + ')' if torch.cuda.is_available() else 'cpu'}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"architectures: {', '.join(list_models())}")
    print(f"external checkpoint sources: {', '.join(EXTERNAL_SOURCES)}")
    print(f"configs: {', '.join(list_configs())}")
    print("datasets:")
    for name in DATASETS:
        try:
            n = len(load_dataset(name, "val" if name == "imagenet" else "test", data_dir=args.data_dir))
            status = f"found ({n} test samples)"
        except (DataFileError, ImportError, ValueError) as err:
            status = f"not available: {str(err).splitlines()[0]}"
        print(f"  {name:<9} {status}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    device = resolve_device(args.device)
    model, meta = _load_model(args)
    model = model.to(device).eval()
    dataset = load_dataset(args.dataset or meta.get("dataset") or "mnist5k", args.split, args.data_dir, args.download, args.n)
    use_memory_format(model, device, example=dataset[0][0].unsqueeze(0))
    defense = AdversarialPnml(model, args.lam, args.refine_steps, top_k=args.top_k, bounds=dataset.info.bounds).eval()
    correct = {"base": 0, "defense": 0}
    seen = 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size)
    start = time.perf_counter()
    with tqdm(total=len(dataset), desc="predict", unit="img") as bar:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                correct["base"] += int((model(x).argmax(1) == y).sum())
                correct["defense"] += int((defense(x).argmax(1) == y).sum())
            seen += len(y)
            bar.update(len(y))
            bar.set_postfix(base=f"{correct['base'] / seen:.3f}", defense=f"{correct['defense'] / seen:.3f}")
    print(f"{dataset.info.name} {args.split}, {seen} samples, lambda={args.lam:g}, {time.perf_counter() - start:.1f} s")
    print(f"  base model accuracy:       {100 * correct['base'] / seen:.2f}%")
    print(f"  Adversarial pNML accuracy: {100 * correct['defense'] / seen:.2f}%")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    config = apply_overrides(load_config(args.config), args.set or [])
    overrides = {"method": args.method, "epochs": args.epochs, "seed": args.seed}
    train_config = TrainConfig.from_config(config, **overrides)
    name = args.dataset or config.get("dataset", "mnist5k")
    train_set = load_dataset(name, "train", args.data_dir, args.download, args.n)
    val_set = load_dataset(name, "test", args.data_dir, args.download, args.val_n)
    out = Path(args.out or f"runs/train-{name}-{train_config.method}")
    ctx, device = init_distributed(resolve_device(args.device))
    say = print if ctx.is_main else (lambda *a, **k: None)
    processes = f", {ctx.world_size} processes" if ctx.enabled else ""
    say(f"training {train_config.arch} with {train_config.method} on {name} ({len(train_set)} samples{processes}) -> {out}")
    start = time.perf_counter()
    try:
        _, history = train(train_config, train_set, out, val_set, device, args.resume, dataset_name=name, dist_ctx=ctx,
                           time_limit=60 * args.time_limit if args.time_limit else None, memory_format=args.memory_format)
    finally:
        shutdown_distributed()
    model_file = out / ("model.pt" if len(history) == train_config.epochs else "last.pt")
    say(f"done in {time.perf_counter() - start:.0f} s: {model_file}, {out / 'metrics.csv'}, {out / 'metrics.png'}")
    return 0


def _evaluation_setup(args: argparse.Namespace, config_name: str, default_attacks: list[str] | None = None,
                      protocol: str = "strict"):
    """Model, dataset and evaluation settings from a preset plus the command line (evaluate, reproduce)."""
    config = apply_overrides(load_config(config_name), args.set or [])
    evaluation = config.get("evaluation", {})
    model, meta = _load_model(args)
    name = args.dataset or config.get("dataset") or meta.get("dataset")
    n = args.n if args.n is not None else evaluation.get("n")
    dataset = load_dataset(name, args.split, args.data_dir, args.download, n)
    lam = None if getattr(args, "no_defense", False) else (args.lam if args.lam is not None else config.get("defense", {}).get("refine_eps"))
    columns = args.attacks.split(",") if args.attacks else default_attacks
    if columns and getattr(args, "protocol", "strict") == "both":
        # One --attacks list for two protocols: each runs the named columns it has; a name neither has is an error.
        known = {s.column.lower() for p in PROTOCOLS for s in attack_specs(config, None, getattr(args, "suite", "paper"), p)}
        unknown = [c for c in columns if c.strip().lower() not in known]
        if unknown:
            raise ValueError(f"unknown attack column(s) {unknown} under either protocol")
        mine = {s.column.lower() for s in attack_specs(config, None, getattr(args, "suite", "paper"), protocol)}
        columns = [c for c in columns if c.strip().lower() in mine]
    settings = EvalSettings(
        dataset=name, split=args.split, n=len(dataset), eps=args.eps if args.eps is not None else evaluation["eps"],
        refine_eps=lam, attacks=attack_specs(config, columns, getattr(args, "suite", "paper"), protocol),
        refine_steps=config.get("defense", {}).get("refine_steps", 1), top_k=config.get("defense", {}).get("top_k"),
        batch_size=args.batch_size or evaluation.get("batch_size", 100), seed=args.seed, model=str(args.checkpoint),
        cascade=getattr(args, "cascade", False), bpda=protocol_bpda(config, protocol),
    )
    for spec in settings.attacks:  # every column's parameters (and optional extras) checked before any attack runs
        build_attack(spec, settings.eps, dataset.info.bounds, settings.seed)
    return config, model, dataset, settings, name


def cmd_evaluate(args: argparse.Namespace) -> int:
    protocol = getattr(args, "protocol", "strict")
    if protocol != "both":
        return _evaluate_protocol(args, _evaluation_setup(args, args.config, protocol=protocol), args.out)[0]
    if getattr(args, "cascade", False):
        raise ValueError("--protocol both compares single columns: drop --cascade (it makes columns cumulative)")
    root = Path(args.out or "runs/eval-protocols")
    # both set up before either runs: a bad argument fails in seconds
    setups = {protocol: _evaluation_setup(args, args.config, protocol=protocol) for protocol in PROTOCOLS}
    results = {}
    for protocol, setup in setups.items():
        print(f"\n== protocol {protocol} ==")
        _, results[protocol], config = _evaluate_protocol(args, setup, root / protocol)
    if results["strict"] is None:  # a non-main process of a distributed run
        return 0
    path = write_comparison(results, config, root)
    print("\n" + path.read_text() + f"\nwrote {path}")
    return 0


def _evaluate_protocol(args: argparse.Namespace, setup: tuple, out_dir: str | Path | None):
    """One evaluation of ``setup`` (from :func:`_evaluation_setup`): run, report, print;
    returns (exit code, result or None, config)."""
    config, model, dataset, settings, name = setup
    lam = settings.refine_eps
    out = Path(out_dir or f"runs/eval-{name}")
    ctx, device = init_distributed(resolve_device(args.device))
    say = print if ctx.is_main else (lambda *a, **k: None)
    processes = f", {ctx.world_size} processes" if ctx.enabled else ""
    say(f"evaluating {args.checkpoint} on {name} {args.split} ({len(dataset)} samples{processes}), eps={settings.eps:g}, "
        f"lambda={lam}{', cascade' if settings.cascade else ''} -> {out}")
    for spec in settings.attacks:
        say(f"  {spec.column:<10} {spec.attack} {json.dumps(spec.params)} base={spec.base} defense={spec.defense}")
    try:
        result = evaluate(model, dataset, settings, out, device, resume=not args.overwrite, dist_ctx=ctx,
                          memory_format=args.memory_format)
    finally:
        shutdown_distributed()
    if not ctx.is_main:
        return 0, None, config
    # The paper's numbers only beside the same dataset at the same radius.
    same_setting = name == config.get("dataset") and settings.eps == config.get("evaluation", {}).get("eps")
    paper = config.get("paper") if same_setting else None
    checks = []
    if args.checks > 0:
        from .masking import masking_checks

        head = [dataset[i] for i in range(min(args.checks, len(dataset)))]
        x, y = torch.stack([h[0] for h in head]).to(device), torch.as_tensor([int(h[1]) for h in head]).to(device)
        print(f"\ngradient-masking checks on {len(y)} samples:")
        checks = masking_checks(model.to(device), x, y, settings.eps, lam, result, dataset.info.bounds, log=print,
                                refine_steps=settings.refine_steps, top_k=settings.top_k)
    paths = write_report(result, out, paper=paper, checks=checks)
    print()
    print(markdown_table(result, paper))
    print()
    print(summary_table(result))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return 0, result, config


def cmd_toy(args: argparse.Namespace) -> int:
    from .experiments.toy import run_toy

    run_toy(args.out, args.config, args.set, resolve_device(args.device), args.seed)
    return 0


def cmd_table1(args: argparse.Namespace) -> int:
    args.config = args.dataset
    args.out = args.out or f"runs/table1-{args.dataset}"
    return cmd_evaluate(args)


def cmd_sweep(args: argparse.Namespace) -> int:
    from .experiments.sweeps import parse_steps, run_sweep

    key = args.param.replace("-", "_")
    if args.protocol == "both":
        raise ValueError("reproduce sweep runs one protocol: --protocol strict or paper")
    config, model, dataset, settings, name = _evaluation_setup(args, args.config, default_attacks=None, protocol=args.protocol)
    if args.param != "hsja-eps" and not args.attacks:
        settings.attacks = [s for s in settings.attacks if s.attack != "hsja"]  # HSJA has its own sweep (Fig. 6)
    raw = args.values.split(",") if args.values else config.get("sweeps", {}).get(key)
    if not raw:
        raise ValueError(f"no values for --param {args.param}: pass --values or add [sweeps] {key} = [...] to the config")
    values = [v.strip() if isinstance(v, str) else v for v in raw]
    if args.param == "steps":
        for v in values:
            parse_steps(v)
    else:
        values = [int(v) if args.param == "k" else float(v) for v in values]
    reference = {"eps": settings.eps, "hsja_eps": settings.eps, "lam": settings.refine_eps}.get(key)
    out = Path(args.out or f"runs/sweep-{name}-{args.param}")
    ctx, device = init_distributed(resolve_device(args.device))
    say = print if ctx.is_main else (lambda *a, **k: None)
    say(f"sweep over {args.param} = {values} on {name} ({len(dataset)} samples"
        f"{f', {ctx.world_size} processes' if ctx.enabled else ''}) -> {out}")
    try:
        paper = {s.column for s in attack_specs(config, None, "paper", args.protocol)}
        run_sweep(model, dataset, settings, args.param, values, out, device, reference, dist_ctx=ctx,
                  memory_format=args.memory_format, paper_columns=[s.column for s in settings.attacks if s.column in paper])
    finally:
        shutdown_distributed()
    say(f"wrote {out / ('sweep_' + args.param)}.md/.csv/.json/.png/.pdf")
    return 0


def cmd_adaptive_training(args: argparse.Namespace) -> int:
    from .experiments.adaptive_training import run_adaptive_training

    lams = tuple(float(v) for v in args.lams.split(","))
    ctx, device = init_distributed(resolve_device(args.device))
    try:
        run_adaptive_training(args.out, args.checkpoint, args.source, args.dataset, args.data_dir, lams, args.epochs,
                              args.attack_steps, train_samples=args.train_samples, n=args.n, device=device,
                              log=print if ctx.is_main else (lambda message: None), dist_ctx=ctx)
    finally:
        shutdown_distributed()
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from .detection import run_detection

    config = apply_overrides(load_config(args.config), args.set or [])
    model, meta = _load_model(args)
    name = args.dataset or config.get("dataset") or meta.get("dataset")
    dataset = load_dataset(name, args.split, args.data_dir, args.download, args.n or config.get("evaluation", {}).get("n"))
    device = resolve_device(args.device)
    x = torch.stack([dataset[i][0] for i in range(len(dataset))]).to(device)
    y = torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))]).to(device)
    lam = args.lam if args.lam is not None else config["defense"]["refine_eps"]
    eps = args.eps if args.eps is not None else config["evaluation"]["eps"]
    out = Path(args.out or f"runs/detect-{name}")
    print(f"regret detector on {name} ({len(y)} samples), lambda {lam}, eps {eps}, attacks of {args.steps} steps -> {out}")
    model = model.to(device).eval()
    use_memory_format(model, device, example=x)
    run_detection(model, x, y, lam, eps, out, steps=args.steps, beta=args.beta, bounds=dataset.info.bounds,
                  batch_size=args.batch_size)
    print((out / "detect.md").read_text())
    print(f"wrote {out / 'detect.md'}, {out / 'detect.json'}, {out / 'detect_roc.png'} (and .pdf)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .benchmark import format_table, run_benchmark

    device = resolve_device(args.device)
    cases = args.models.split(",") if args.models else None
    print(f"benchmarking on {device} with {args.threads or torch.get_num_threads()} threads, median of {args.repeats} runs")
    result = run_benchmark(cases, device, args.threads, args.repeats, args.batch, args.out, loops=not args.skip_loops,
                           memory_format=args.memory_format)
    print()
    print(format_table(result))
    print(f"\n{result['seconds']:.0f} s; wrote {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out), device=resolve_device(args.device), retrain=args.retrain, n=args.n)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advpnml", description="Adversarial pNML: defense, attacks and honest evaluation.")
    parser.add_argument("--version", action="version", version=f"advpnml {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions, device, architectures, configs and which datasets are found")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("predict", help="accuracy of a checkpoint and of its defense on a dataset split")
    _add_model_args(p)
    _add_data_args(p)
    p.add_argument("--lam", type=float, default=0.1, help="refinement strength lambda (default: %(default)s)")
    p.add_argument("--refine-steps", type=int, default=1)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=100)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("train", help="standard, PGD or fast adversarial training (resumable)")
    p.add_argument("--config", default="mnist5k", help=f"preset ({', '.join(list_configs())}) or a .toml file")
    _add_data_args(p, default_split="train")
    p.add_argument("--method", choices=("standard", "pgd", "fast"), default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--val-n", type=int, default=1000, help="held-out samples for the final validation")
    p.add_argument("--out", default=None, help="output folder (checkpoints, metrics.csv, metrics.png)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop before an epoch that would end past this many minutes; --resume continues")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. training.lr=0.05")
    p.add_argument("--memory-format", default="contiguous", choices=MEMORY_FORMATS,
                   help="model layout; auto (channels_last for conv models on CPU) trains ~1.2x faster there but, float "
                        "sums running in another order, a slightly different model than results/ records (default: %(default)s)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="robust accuracy of base and defense under the config's attacks")
    _add_model_args(p)
    p.add_argument("--config", default="mnist5k", help=f"preset ({', '.join(list_configs())}) or a .toml file")
    _add_data_args(p)
    _add_eval_args(p)
    p.add_argument("--no-defense", action="store_true", help="evaluate the base model only")
    p.add_argument("--out", default=None, help="output folder (records.jsonl, results.md/.csv/.json)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming OUT/records.jsonl")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("toy", help="the paper's 2-D toy example (Fig. 1): table and probability-surface figure")
    p.add_argument("--out", default="runs/toy")
    p.add_argument("--config", default="toy2d", help="preset or .toml (default: %(default)s)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. defense.refine_eps=0.4")
    p.set_defaults(func=cmd_toy)

    p = sub.add_parser("reproduce", help="the paper's Table 1, sweeps (Figs. 2-4, 6, 7) and the adaptive-training comparison")
    experiments = p.add_subparsers(dest="experiment", required=True)
    q = experiments.add_parser("table1", help="Table 1's rows for base and defense, the paper's numbers beside ours")
    q.add_argument("--dataset", "--data", dest="dataset", required=True, choices=("mnist", "cifar10", "imagenet", "mnist5k"))
    _add_model_args(q)
    q.add_argument("--split", default="test")
    q.add_argument("--data-dir", default=None)
    q.add_argument("--download", action="store_true")
    q.add_argument("--samples", "--n", dest="n", type=int, default=None, help="use the first N samples")
    q.add_argument("--device", default="auto")
    _add_eval_args(q)
    q.add_argument("--out", default=None)
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=cmd_table1)
    q = experiments.add_parser("sweep", help="base vs defense over eps, lam, steps, k or HSJA eps: table and line plot")
    q.add_argument("--param", required=True, choices=("eps", "lam", "steps", "k", "hsja-eps"))
    q.add_argument("--values", default=None, help="comma-separated (default: the config's [sweeps] values); steps as 2x0.015")
    _add_model_args(q)
    q.add_argument("--config", default="mnist5k", help=f"preset ({', '.join(list_configs())}) or a .toml file")
    _add_data_args(q)
    _add_eval_args(q)
    q.add_argument("--out", default=None)
    q.set_defaults(func=cmd_sweep)
    q = experiments.add_parser("adaptive-training", help="PGD-trained vs fine-tuned against the adaptive attack, over lambda")
    q.add_argument("--checkpoint", default=None, help="a PGD-trained model (default: train the mnist5k recipe)")
    q.add_argument("--source", default=None, help="read --checkpoint as an external file, e.g. advertorch_lenet5")
    q.add_argument("--dataset", "--data", dest="dataset", default="mnist5k", choices=("mnist5k", "mnist"))
    q.add_argument("--data-dir", default=None)
    q.add_argument("--lams", default="0.01,0.03,0.1,0.2", help="comma-separated lambdas (default: %(default)s)")
    q.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs against the adaptive attack (default: %(default)s)")
    q.add_argument("--attack-steps", type=int, default=5, help="PGD steps of the fine-tuning attack (default: %(default)s)")
    q.add_argument("--train-samples", type=int, default=4000)
    q.add_argument("--samples", "--n", dest="n", type=int, default=200, help="test samples (default: %(default)s)")
    q.add_argument("--device", default="auto")
    q.add_argument("--out", default="runs/adaptive-training")
    q.set_defaults(func=cmd_adaptive_training)

    p = sub.add_parser("detect", help="the pNML regret as an adversarial-input detector: ROC AUC, detection at 5%% FPR, ROC plot")
    _add_model_args(p)
    p.add_argument("--config", default="mnist5k", help=f"preset ({', '.join(list_configs())}) or a .toml file")
    _add_data_args(p)
    p.add_argument("--eps", type=float, default=None)
    p.add_argument("--lam", type=float, default=None)
    p.add_argument("--steps", type=int, default=40, help="steps of each attack (default: %(default)s)")
    p.add_argument("--beta", type=float, default=1.0, help="regret weight of the detector-aware attack (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("bench", help="speed of the defense vs its floor and naive loops, top-k, PGD vs torchattacks")
    p.add_argument("--models", default=None, help="comma-separated: mnist_cnn, preact_resnet18, wrn_28_10, mnist_cnn_100 (default: all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement, after one warm-up (default: %(default)s)")
    p.add_argument("--batch", type=int, default=None, help="batch size for every model (default: per model and device)")
    p.add_argument("--skip-loops", action="store_true", help="skip the naive reference loops (a quick re-check)")
    p.add_argument("--memory-format", default="auto", choices=MEMORY_FORMATS,
                   help="layout the defense and PGD run in; references use the fastest layout (default: %(default)s, "
                        "channels_last for conv models on CPU)")
    p.add_argument("--out", default="runs/bench.json", help="JSON output (default: %(default)s)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="train a small robust MNIST model on the embedded data and evaluate base vs defense")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--device", default="auto")
    p.add_argument("--samples", "--n", dest="n", type=int, default=None, help="test samples (default: the mnist5k config's)")
    p.add_argument("--retrain", action="store_true", help="train again even if OUT/model/model.pt exists")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_cpu_allocator()  # this process is ours: reuse freed CPU tensor memory (see advpnml.allocator)
    try:
        return args.func(args)
    except (ValueError, CheckpointError, DataFileError, ImportError) as err:
        print(f"advpnml {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
