"""The honest evaluation of the user's own model and data in one call: ``advpnml.evaluate(model, data, eps=..., lam=...)``.

It is the job ``advpnml evaluate`` runs (:func:`advpnml.jobs.make_run`, :func:`advpnml.jobs.evaluate_and_report`):
every attack of the suite on every sample, on the base model and through the Adversarial pNML defense, the
per-sample worst case, the gradient-masking checks and, with ``out``, the same files and resume as the command
line. AutoAttack's ``run_standard_evaluation(x, y)`` and RobustBench's ``benchmark(model)`` take a model and
tensors the same way; this adds the defense, the adaptive attacks through it and the per-sample worst case.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .config import Preset, from_preset, generic_preset
from .evaluation.identity import architecture
from .evaluation.records import EvalResult
from .runtime import Runtime, resolve_device, silent

#: What ``**overrides`` of :func:`evaluate` may hold.
OVERRIDES = {
    "attacks": "the columns to run, in order (names of the suite's columns, a list or a comma-separated string)",
    "set": "KEY=VALUE changes as the command line's --set takes them (a list, or a dict {'PGD.restarts': 5})",
    "batch_size": "samples per batch",
    "cascade": "AutoAttack's protocol (each attack only on what earlier ones left)",
    "protocol": "'strict' (ours) or 'paper' (the official code's columns; needs a preset)",
    "checks": "gradient-masking checks on the first N samples (default 50; 0 skips them)",
    "defended": "False: the base model only",
    "resume": "False: start over instead of resuming out/records.jsonl",
    "data_dir": "where a named dataset's files are",
    "image_size": "the side an image folder's images are resized to",
    "split": "a named dataset's split (default 'test')",
    "memory_format": "'auto', 'channels_last' or 'contiguous'",
    "verbose": "False: no log and no progress bar",
}


@dataclass
class Evaluation:
    """What :func:`evaluate` found: the per-sample records and the tables drawn from them.

    ``summary()`` is the ``"summary"`` entry of ``results.json``; ``accuracy()`` the table's cells; ``records`` the
    per-sample predictions; ``robust(row)`` the per-sample worst case; ``checks`` the gradient-masking checklist;
    ``markdown()`` the tables as the command line prints them; ``out`` where the files went (None: nowhere)."""

    result: EvalResult
    out: Path | None

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Per row (``base``, ``defense``): clean accuracy and the per-sample worst case over each family of attacks
        (``static``, ``transfer``, ``adaptive``, ``black-box``, ``reference``; None where none ran) and over all of
        them (``worst case``), in Croce et al. (ICML 2022)'s layout."""
        from .evaluation.reporting import robustness_summary

        return robustness_summary(self.result)

    def accuracy(self) -> dict[str, dict[str, float | None]]:
        """Per row, the accuracy under each column (``Natural`` included; None where it did not run) and the
        ``Best attack`` (the per-sample worst case)."""
        return self.result.accuracy()

    @property
    def records(self) -> list[dict[str, Any]]:
        """One dict per sample: ``index``, ``label``, ``pred[row][column]`` (-1: skipped by a cascade), ``queries``."""
        return self.result.records

    @property
    def checks(self) -> list[Any]:
        """The gradient-masking checks (:class:`advpnml.evaluation.masking.Check`: row, name, status pass/warn/info, detail)."""
        return self.result.checks

    def robust(self, row: str = "defense") -> torch.Tensor:
        """Per sample, True when ``row`` classified it correctly naturally and under every attack."""
        return self.result.robust(row)

    def markdown(self) -> str:
        """The Table-1 layout, the summary with the verdict, and the checks, as Markdown."""
        from .evaluation.reporting import markdown_table, summary_table

        lines = [markdown_table(self.result), "", summary_table(self.result)]
        if self.checks:
            lines += ["", *(f"- `{c.status.upper()}` {c.row}: **{c.name}**: {c.detail}" for c in self.checks)]
        return "\n".join(lines)


def evaluate(
    model: nn.Module,
    data: Any,
    *,
    eps: float | None = None,
    lam: float | None = None,
    suite: str | None = None,
    preset: str | os.PathLike | None = None,
    n: int | None = None,
    out: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    defense: str | nn.Module | None = None,
    **overrides: Any,
) -> Evaluation:
    """Evaluate ``model`` and its Adversarial pNML defense (eqs. 9-12, lambda = ``lam``) under every attack of
    ``suite`` at radius ``eps``, per sample.

    Args:
        model: any ``nn.Module`` from inputs in [0, 1] to logits (N, C) (the torchattacks/RobustBench convention);
            it is moved to ``device`` and put in eval mode. ``normalize=(mean, std)`` wraps a model that expects
            normalized inputs.
        data: an ``(x, y)`` pair (tensors or arrays; uint8 pixels are scaled to [0, 1]), a torch ``Dataset``, a
            dataset name (``"cifar10"``; ``data_dir=`` where its files are), or a ``.npz``/``.pt`` file or image folder.
        eps: the attack radius. Without a ``preset`` every budget follows from it
            (:data:`advpnml.config.GENERIC_STEPS`): PGD, the adaptive attacks (cross-entropy, margin and second-order
            margin on log q) and the joint-hypotheses attack take 100 steps of 2.5 * eps / 100 from one random start,
            FGSM one step of eps, HopSkipJump 26,000 queries; AutoAttack's attacks are parameter-free (APGD-CE and
            APGD-T 100 steps, 9 targets; Square 5,000 queries). With ``preset`` its value overrides the preset's.
        lam: lambda, the refinement strength (eq. 9); needed without a preset (overrides the preset's with one).
        suite: ``"paper"``, ``"strong"`` (+ APGD-CE, the exact-clip and second-order adaptive attacks, joint
            hypotheses, Square) or ``"autoattack"`` (+ the reference AutoAttack, ``pip install 'advpnml[autoattack]'``).
            None (the default, as the command line's): ``"strong"``, or a preset's own columns when it has no
            ``[[evaluation.strong]]``.
        preset: a preset name (``"cifar10"``) or ``.toml`` file whose suite and budgets apply instead of the rule.
        n: evaluate the first ``n`` samples.
        out: a folder for ``records.jsonl`` (resumable, with the identity hashes) and ``results.md/.csv/.json/.png``,
            as the command line writes them; None writes nothing.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        seed: the attacks' seed (each batch's derives from it).
        normalize: ``(mean, std)`` per channel, for a model that expects normalized inputs.
        defense: the test-time defense: ``"pnml"`` (the default, or a preset's ``[defense] name``), ``"hedge"``,
            ``"anti-adversary"``, ``"tte"`` (:data:`advpnml.defense.DEFENSES`; parameters with
            ``set={"defense.hedge.steps": 10}``), ``"FILE.py:NAME"`` (``NAME(model)`` returns the defended module), or
            your own ``nn.Module`` around ``model``: it is attacked through its own autograd, by transfer from
            ``model`` and by the black-box attacks (docs: "Evaluate your own defense").
        overrides: see :data:`OVERRIDES` (``attacks=["APGD-T", "APGD-T adaptive"]``, ``set={"PGD.restarts": 5}``,
            ``checks=0``, ``verbose=False``, ...).

    Returns:
        :class:`Evaluation`. Bad input (a model that does not take the data, labels outside its outputs, ``x``
        outside [0, 1], a bad setting) is a one-line ``ValueError`` before any attack runs.
    """
    from .data.user import as_dataset
    from .jobs import evaluate_and_report, make_run
    from .models import Normalized

    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; evaluate takes: {', '.join(OVERRIDES)}")
    needs_lam = overrides.get("defended", True) and (defense is None or defense == "pnml")
    chosen = _preset(preset, eps, lam, _assignments(overrides.get("set")), needs_lam)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
    if normalize is not None:
        if not (isinstance(normalize, (tuple, list)) and len(normalize) == 2):
            raise ValueError(f"normalize must be a (mean, std) pair, got {normalize!r}")
        model = Normalized(model, *normalize)
    dataset = as_dataset(data, n, overrides.get("data_dir"), overrides.get("image_size"), overrides.get("split", "test"))
    attacks = overrides.get("attacks")
    only = [a.strip() for a in attacks.split(",")] if isinstance(attacks, str) else list(attacks) if attacks else None
    run = make_run(
        chosen,
        model,
        dataset,
        model_name=architecture(model),
        split=overrides.get("split", "test"),
        eps=eps,
        refine_eps=lam,
        defended=overrides.get("defended", True),
        only=only,
        suite=suite,
        protocol=overrides.get("protocol", "strict"),
        batch_size=overrides.get("batch_size"),
        seed=seed,
        cascade=bool(overrides.get("cascade", False)),
        defense=defense,
    )
    verbose = bool(overrides.get("verbose", True))
    runtime = Runtime(
        resolve_device(device),
        memory_format=overrides.get("memory_format", "auto"),
        log=print if verbose else silent,
        progress=verbose,
    )
    result = evaluate_and_report(run, out, runtime, resume=overrides.get("resume", True), checks=overrides.get("checks", 50))
    if result is None:  # only under torchrun, on a rank other than 0
        raise RuntimeError("advpnml.evaluate runs in one process; under torchrun use the advpnml command")
    return Evaluation(result, Path(out) if out is not None else None)


def _preset(preset: str | os.PathLike | None, eps: float | None, lam: float | None, sets: list[str], defended: bool) -> Preset:
    if preset is not None:
        return from_preset(preset, sets)
    if lam is None and defended:
        raise ValueError(
            "without a preset, pass lam (the refinement strength lambda of eq. 9), e.g. lam=eps/3 as the paper "
            "does on CIFAR-10 (0.03 at eps 8/255), or defended=False for the base model only"
        )
    return generic_preset(eps, lam, sets)


def _assignments(value: Any) -> list[str]:
    """``set`` as KEY=VALUE strings: a list of them, or a dict (values written as TOML would)."""
    if value is None:
        return []
    if isinstance(value, dict):
        import json

        return [f"{k}={json.dumps(v) if isinstance(v, (bool, str)) else v}" for k, v in value.items()]
    if isinstance(value, str):
        return [value]
    return list(value)
