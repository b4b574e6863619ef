"""``advpnml``: argument wiring over :mod:`advpnml.jobs` and the experiments. Each command and its arguments live
together in one module here (:mod:`.evaluate`, :mod:`.train`, :mod:`.reproduce`, :mod:`.tools`); the arguments
several share are in :mod:`.arguments`."""

from __future__ import annotations

import argparse
import sys

from ..accel.allocator import tune_cpu_allocator
from ..data import DataFileError
from ..models import CheckpointError
from ..version import __version__
from . import evaluate, reproduce, tools, train
from .arguments import groups


def build_parser() -> argparse.ArgumentParser:
    """The ``advpnml`` argument parser: every command and its options."""
    parser = argparse.ArgumentParser(prog="advpnml", description="Adversarial pNML: defense, attacks and honest evaluation.")
    parser.add_argument("--version", action="version", version=f"advpnml {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    shared = groups()
    for module in (evaluate, train, reproduce, tools):
        module.add_commands(sub, shared)
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
