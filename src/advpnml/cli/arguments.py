"""The arguments several commands share (model, data, preset, evaluation, defense), as parent parsers, and the
wiring every command uses (:func:`command`, :func:`in_runtime`)."""

from __future__ import annotations

import argparse
from typing import NamedTuple

from ..config import DEFENSE_NAMES, PROTOCOLS, SUITES, from_preset, list_configs
from ..data import DATASETS
from ..models import EXTERNAL_SOURCES, MEMORY_FORMATS
from ..runtime import start_runtime


class Groups(NamedTuple):
    """The shared argument groups, each a parent parser; each command gets its own copy where it sets a default
    (argparse shares a parent's actions, so a default set on one would be every command's)."""

    model: argparse.ArgumentParser
    data: argparse.ArgumentParser
    train_data: argparse.ArgumentParser
    config: argparse.ArgumentParser
    evaluation: argparse.ArgumentParser
    paper_evaluation: argparse.ArgumentParser
    device: argparse.ArgumentParser


def groups() -> Groups:
    """A fresh set of the shared argument groups."""
    return Groups(
        model=group(model_args),
        data=group(data_args),
        train_data=group(lambda p: data_args(p, "train")),
        config=group(lambda q: config_args(q, "mnist5k", defense=False)),
        evaluation=group(config_args, eval_args),
        paper_evaluation=group(config_args, lambda q: eval_args(q, "paper")),
        device=group(
            lambda q: q.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K (default: %(default)s)")
        ),
    )


def command(parent, name: str, func, help: str, parents=()) -> argparse.ArgumentParser:
    """Sub-command ``name`` of ``parent`` running ``func(args)``, with the ``parents``' arguments."""
    p = parent.add_parser(name, help=help, parents=list(parents))
    if func is not None:
        p.set_defaults(func=func)
    return p


def in_runtime(job):
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


def normalization(args: argparse.Namespace) -> tuple[list[float], list[float]] | None:
    """``--mean``/``--std`` as the (mean, std) pair a model expecting normalized inputs is wrapped with."""
    if (args.mean is None) != (args.std is None):
        raise ValueError("--mean and --std go together (the normalization your model expects)")
    return None if args.mean is None else (args.mean, args.std)


def group(*adders) -> argparse.ArgumentParser:
    """A parent parser holding the arguments ``adders`` declare (shared by every command that takes them)."""
    parent = argparse.ArgumentParser(add_help=False)
    for add in adders:
        add(parent)
    return parent


def layout_arg(p: argparse.ArgumentParser, default: str, note: str = "") -> None:
    """``--memory-format``: the model's layout (auto: channels_last for conv models on CPU)."""
    p.add_argument(
        "--memory-format",
        default=default,
        choices=MEMORY_FORMATS,
        help=f"model layout: auto is channels_last for conv models on CPU (same values, faster){note} (default: %(default)s)",
    )


def model_args(p: argparse.ArgumentParser) -> None:
    """The model: ``--checkpoint``, ``--source``, ``--model FILE.py:NAME``, ``--mean``/``--std``."""
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


def data_args(p: argparse.ArgumentParser, split: str = "test") -> None:
    """The data: a named dataset or the user's file or folder, its split, folder and sample count, and the device."""
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


def config_args(p: argparse.ArgumentParser, default: str | None = None, defense: bool = True) -> None:
    """The preset and ``--set`` changes; with ``defense``, ``--eps`` and ``--lam`` too."""
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


def eval_args(p: argparse.ArgumentParser, suite: str | None = None) -> None:
    """What an evaluation runs and where it writes: columns, suite, cascade, protocol, checks, output folder."""
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
    layout_arg(p, "auto")
    p.add_argument("--out", default=None, help="output folder (default: runs/eval-DATASET, runs/table1-DATASET, runs/sweep-...)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming OUT/records.jsonl")
    p.set_defaults(no_defense=False)


def defense_arg(p: argparse.ArgumentParser) -> None:
    """``--defense``: a registry defense by name or the user's own ``FILE.py:NAME``."""
    p.add_argument(
        "--defense",
        default=None,
        metavar="NAME|FILE.py:NAME",
        help=f"the test-time defense: {', '.join(DEFENSE_NAMES)}, or your own (NAME(model) returns the defended "
        "module); its parameters: --set defense.NAME.KEY=VALUE (default: the config's [defense] name, else pnml)",
    )
