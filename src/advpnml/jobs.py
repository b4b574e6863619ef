"""The jobs every entry point runs: set up a run, evaluate and report it honestly, compare protocols, predict.

The command line, ``advpnml demo`` and the toy experiment call these; none of them repeats the
evaluate -> gradient-masking checks -> report sequence, so every table the project prints carries the
same checks. The walk from ``--lam`` to the refinement: :mod:`advpnml.cli` (the flag) -> :func:`load_run`
(into :class:`~advpnml.config.EvalSettings` through :meth:`Preset.eval_settings
<advpnml.config.Preset.eval_settings>`) -> :mod:`advpnml.evaluation.engine` ->
:meth:`AdversarialPnml.from_spec <advpnml.defense.AdversarialPnml.from_spec>`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from .accel.precision import with_precision
from .config import PROTOCOLS, DefenseSpec, EvalSettings, Preset, from_preset, generic_preset
from .data import DATASETS, LabeledDataset, load_dataset
from .data.user import as_dataset
from .defense import (
    DEFENSES,
    build_user_defense,
    check_defense,
    create_defense,
    defense_hooks,
    defense_label,
    defense_settings,
)
from .evaluation.engine import build_attack, evaluate
from .evaluation.lock import hold
from .evaluation.protocols import write_comparison
from .evaluation.records import EvalResult
from .evaluation.reporting import defense_title, markdown_table, summary_table, write_report
from .models import (
    CheckpointError,
    Normalized,
    build_user_model,
    default_checkpoint,
    load_checkpoint,
    load_external,
    load_state,
    use_memory_format,
)
from .modes import frozen_parameters
from .runtime import Runtime


def load_model(
    checkpoint: str | None,
    source: str | None = None,
    model_spec: str | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model to evaluate and its metadata: an advpnml checkpoint; an external file read as ``source``; or (with
    ``model_spec``, ``FILE.py:NAME``) the user's own class built by calling NAME, ``checkpoint`` then a plain state
    dict. ``normalize=(mean, std)`` wraps a model that expects normalized inputs.

    A source whose package ships its weights (``autoattack_resnet18``) needs no ``checkpoint``."""
    if model_spec:
        if source:
            raise ValueError("--model builds your own class and --source reads a file as one of ours: pass one of them")
        model = build_user_model(model_spec)
        if checkpoint:
            load_state(model, checkpoint)
        model, meta = model.eval(), {"arch": model_spec, "source": checkpoint}
    elif source:
        checkpoint = checkpoint or str(default_checkpoint(source))
        model, meta = load_external(checkpoint, source), {"arch": source, "source": checkpoint}
    elif checkpoint is None:
        raise CheckpointError(
            "--checkpoint is required (or --model FILE.py:NAME for your own class, or --source "
            "autoattack_resnet18, whose package ships its file)"
        )
    else:
        model, meta = load_checkpoint(checkpoint)
    if normalize is not None:
        model = Normalized(model, *normalize)
    return model, meta


def choose_preset(
    config: str | None, data: str | None, eps: float | None = None, lam: float | None = None, overrides: list[str] | None = None
) -> Preset:
    """The preset of a command: ``config`` when given; else a named dataset's own preset (``mnist5k`` when none is
    named); else, for data of the user's own (a file or folder), the generic suite with budgets from ``eps``
    (:func:`advpnml.config.generic_preset`)."""
    if config:
        return from_preset(config, overrides)
    if data is not None and data not in DATASETS:
        return generic_preset(eps, lam, overrides)
    return from_preset(data or "mnist5k", overrides)


def load_data(
    name: str,
    split: str = "test",
    data_dir: str | None = None,
    download: bool = False,
    n: int | None = None,
    image_size: int | None = None,
) -> LabeledDataset:
    """A named dataset (:data:`advpnml.data.DATASETS`) or the user's own file or image folder."""
    if name in DATASETS:
        return load_dataset(name, split, data_dir, download, n)
    return as_dataset(name, n, image_size=image_size)


@dataclass
class Run:
    """An evaluation set up and checked, not yet run: the preset it came from, the model, the data and the settings."""

    preset: Preset
    model: nn.Module
    dataset: LabeledDataset
    settings: EvalSettings
    defense: nn.Module | None = None  # the user's own defense around model (None: settings.defense_name's)


def load_run(
    preset: Preset,
    checkpoint: str | None,
    source: str | None = None,
    *,
    model_spec: str | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    dataset: str | None = None,
    split: str = "test",
    data_dir: str | None = None,
    download: bool = False,
    n: int | None = None,
    image_size: int | None = None,
    **settings: Any,
) -> Run:
    """Model, data and settings of one evaluation: the preset's values unless given here.

    The model as :func:`load_model` reads it; ``dataset`` a name or the user's own file or folder. ``settings``:
    the keyword arguments of :meth:`Preset.eval_settings <advpnml.config.Preset.eval_settings>` (``eps``,
    ``refine_eps``, ``defended``, ``only``, ``suite``, ``protocol``, ``batch_size``, ``seed``, ``cascade``).
    Every attack is built once here, so a bad parameter fails before any attack runs. ``defense`` (in
    ``settings``): a registry name or ``FILE.py:NAME`` (see :func:`make_run`).
    """
    named = settings.get("defense")
    early = {**settings, "defense": named if named is None or named in DEFENSES else None}
    preset.eval_settings(dataset or preset.dataset or "", split, 1, **early)  # bad eps, lambda, columns: before any loading
    model, meta = load_model(checkpoint, source, model_spec, normalize)
    name = dataset or preset.dataset or meta.get("dataset")
    if name is None:
        raise ValueError("no dataset: pass --data (the config and the checkpoint name none)")
    data = load_data(name, split, data_dir, download, n if n is not None else preset.n, image_size)
    label = " ".join(str(part) for part in (model_spec, checkpoint or source) if part)
    return make_run(preset, model, data, meta=meta, model_name=label, split=split, **settings)


def make_run(
    preset: Preset,
    model: nn.Module,
    dataset: LabeledDataset,
    *,
    meta: dict[str, Any] | None = None,
    model_name: str = "",
    split: str = "test",
    defense: str | nn.Module | None = None,
    **settings: Any,
) -> Run:
    """The run of ``model`` on ``dataset`` (any dataset with an ``.info``, the user's own included) under ``preset``:
    the model checked against the data (one forward and backward, :func:`_check_fits`) and every attack built, so
    a bad model, label or parameter fails in one line before any attack runs. ``settings`` as :func:`load_run`.

    ``defense``: a registry name (:data:`advpnml.defense.DEFENSES`; None: the preset's, else ``pnml``), ``FILE.py:NAME``
    (``NAME(model)`` returns the defended module), or a module around ``model``. It is built and run on one sample
    here, so an unknown name, a parameter out of range or an output that does not fit is one line first; the
    columns it cannot run (:data:`advpnml.config.DEFENSE_HOOKS`) are left out."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
    name = dataset.info.name
    if not len(dataset):
        raise ValueError(f"the data ({name}) holds no samples")
    own: nn.Module | None = None
    if isinstance(defense, str) and defense not in DEFENSES:
        if ":" not in defense:
            raise ValueError(f"unknown defense {defense!r}; expected one of {', '.join(DEFENSES)} or your own as FILE.py:NAME")
        own = build_user_defense(defense, model)
    elif defense is not None and not isinstance(defense, str):
        if not isinstance(defense, nn.Module):
            raise ValueError(
                f"defense must be a name, FILE.py:NAME or a torch.nn.Module around the model, got {type(defense).__name__}"
            )
        own = defense
    choice = dict(defense=defense_label(own), defense_hooks=defense_hooks(own)) if own is not None else dict(defense=defense)
    preset.eval_settings(name, split, 1, **choice, **settings)
    classes = _check_fits(model, meta or {}, dataset)
    run_settings = preset.eval_settings(name, split, len(dataset), model=model_name, **choice, **settings)
    if run_settings.defense is not None:
        built = (
            own
            if own is not None
            else create_defense(
                run_settings.defense_name, model, run_settings.defense_params, run_settings.defense, dataset.info.bounds
            )
        )
        check_defense(built, dataset[0][0].unsqueeze(0), classes)
        run_settings = replace(run_settings, defense_params=defense_settings(built) or run_settings.defense_params)
    for spec in run_settings.attacks:
        attack = build_attack(spec, run_settings.eps, dataset.info.bounds, run_settings.seed)
        if getattr(attack, "name", "") == "apgd-t" and classes < 4:
            raise ValueError(
                f"column {spec.column!r} (APGD-T's targeted DLR loss) needs at least 4 classes, the model has "
                f"{classes}; leave it out with attacks=[...] (--attacks)"
            )
        if getattr(attack, "name", "") == "square" and len(dataset.info.input_shape) != 3:
            raise ValueError(
                f"column {spec.column!r} (Square) needs image inputs (C, H, W), the data's are "
                f"{dataset.info.input_shape}; leave it out with attacks=[...] (--attacks)"
            )
    return Run(preset, model, dataset, run_settings, own)


def _check_fits(model: nn.Module, meta: dict[str, Any], data: LabeledDataset) -> int:
    """One forward and backward of one sample: a model that cannot take this dataset's inputs, does not return one
    row of logits per input with a logit per class, or whose logits do not depend on its input is a one-line error,
    before any attack. Returns the model's number of classes (the dataset's when it is empty)."""
    if not len(data):
        return data.info.num_classes
    x = data[0][0].unsqueeze(0).clone().requires_grad_(True)
    try:
        with torch.enable_grad(), frozen_parameters(model):
            logits = model.eval()(x)
    except RuntimeError as err:
        trained = f" (its checkpoint names dataset {meta['dataset']!r})" if meta.get("dataset") else ""
        raise ValueError(
            f"the model does not take {data.info.name} inputs of shape {tuple(data[0][0].shape)}{trained}: "
            f"{str(err).splitlines()[0][:120]}"
        ) from None
    shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() != 2 or logits.shape[0] != 1:
        raise ValueError(f"the model must return floating logits of shape (N, classes); for one input it returned {shape}")
    if logits.shape[1] < data.info.num_classes:
        raise ValueError(
            f"the model returns {logits.shape[1]} logits per input but {data.info.name} has "
            f"{data.info.num_classes} classes (labels up to {data.info.num_classes - 1})"
        )
    if not logits.requires_grad:
        raise ValueError(
            "the model's logits do not depend on its input (no gradient reaches it): gradient attacks and the "
            "defense's refinement need that gradient"
        )
    return int(logits.shape[1])


def evaluate_and_report(
    run: Run, out: str | os.PathLike | None, runtime: Runtime, resume: bool = True, checks: int = 50
) -> EvalResult | None:
    """Evaluate ``run`` (resumable in ``out``), run the gradient-masking checks on its first ``checks`` samples
    (kept in ``result.checks``), write ``results.md/.csv/.json/.png`` with the paper's numbers where they apply, and
    log the tables. ``out=None``: the same evaluation and checks, nothing written.

    Returns the result on rank 0, None on the other ranks of a torchrun job."""
    runtime = runtime.for_rank()
    model, dataset, settings = run.model, run.dataset, run.settings
    out = Path(out) if out is not None else None
    runtime.log(
        f"evaluating {settings.model} on {settings.dataset} {settings.split} ({len(dataset)} samples{runtime.processes}), "
        f"eps={settings.eps:g}, {defense_title(settings)}{', cascade' if settings.cascade else ''}"
        + (f" -> {out}" if out is not None else "")
    )
    for spec in settings.attacks:
        runtime.log(f"  {spec.column:<10} {spec.attack} {json.dumps(spec.params)} base={spec.base} defense={spec.defense}")
    with hold(out if runtime.is_main else None, runtime.log):  # held through the report too
        result = evaluate(model, dataset, settings, out, runtime, resume=resume, defense=run.defense)
        return _check_and_report(run, result, out, runtime, checks) if runtime.is_main else None


def _check_and_report(run: Run, result: EvalResult, out: Path | None, runtime: Runtime, checks: int) -> EvalResult:
    model, dataset, settings = run.model, run.dataset, run.settings
    if checks > 0:
        from .evaluation.masking import masking_checks

        head = [dataset[i] for i in range(min(checks, len(dataset)))]
        x = torch.stack([h[0] for h in head]).to(runtime.device)
        y = torch.as_tensor([int(h[1]) for h in head]).to(runtime.device)
        runtime.log(f"\ngradient-masking checks on {len(y)} samples:")
        checked = with_precision(model.to(runtime.device), runtime.precision)  # the classifier as evaluate ran it
        defense: Any = settings.defense
        if settings.defense is not None and (run.defense is not None or settings.defense_name != "pnml"):
            defense = run.defense or create_defense(
                settings.defense_name, checked, settings.defense_params, settings.defense, dataset.info.bounds
            )
        result.checks = masking_checks(checked, x, y, settings.eps, defense, result, dataset.info.bounds, log=runtime.log)
    # the pNML paper's Table 1 sits beside the pNML only, never beside another defense
    paper = run.preset.paper_numbers(settings.dataset, settings.eps) if settings.defense_name == "pnml" else None
    wrote = ""
    if out is not None:
        paths = write_report(result, out, paper=paper, checks=result.checks)
        wrote = f"\n\nwrote {', '.join(str(p) for p in paths.values())}"
    runtime.log(f"\n{markdown_table(result, paper)}\n\n{summary_table(result)}{wrote}")
    return result


def evaluate_protocols(
    load: Callable[[str], Run], out: str | Path, runtime: Runtime, resume: bool = True, checks: int = 50
) -> Path | None:
    """The same model under every protocol (:data:`advpnml.config.PROTOCOLS`), each in ``out/<protocol>``, and
    ``out/protocols.md``: Table 1's cells side by side with what moves each. ``load(protocol)`` sets a run up;
    all are set up before any runs, so a bad argument fails in seconds."""
    runs = {protocol: load(protocol) for protocol in PROTOCOLS}
    if any(run.settings.cascade for run in runs.values()):
        raise ValueError("--protocol both compares single columns: drop --cascade (it makes columns cumulative)")
    results = {}
    for protocol, run in runs.items():
        runtime.for_rank().log(f"\n== protocol {protocol} ==")
        results[protocol] = evaluate_and_report(run, Path(out) / protocol, runtime, resume, checks)
    if not runtime.is_main:
        return None
    path = write_comparison({p: r for p, r in results.items() if r is not None}, runs["strict"].preset.data, Path(out))
    runtime.log("\n" + path.read_text() + f"\nwrote {path}")
    return path


def predict(
    model: nn.Module,
    dataset: LabeledDataset,
    defense: DefenseSpec,
    runtime: Runtime,
    batch_size: int = 100,
    meta: dict[str, Any] | None = None,
    defense_name: str = "pnml",
    defense_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Clean accuracy of the model and of its defense on ``dataset``, with a progress bar; returns counts and time.
    A model that does not take the data is one line first (:func:`_check_fits`)."""
    from tqdm.auto import tqdm

    _check_fits(model, meta or {}, dataset)
    model = model.to(runtime.device).eval()
    use_memory_format(model, runtime.device, runtime.memory_format, example=dataset[0][0].unsqueeze(0))
    defended = create_defense(defense_name, model, defense_params, defense, dataset.info.bounds)
    correct, seen, start = {"base": 0, "defense": 0}, 0, time.perf_counter()
    with tqdm(total=len(dataset), desc="predict", unit="img", disable=not runtime.progress) as bar:
        for x, y in DataLoader(cast(Dataset, dataset), batch_size=batch_size):
            x, y = x.to(runtime.device), y.to(runtime.device)
            with torch.no_grad():
                correct["base"] += int((model(x).argmax(1) == y).sum())
                correct["defense"] += int((defended(x).argmax(1) == y).sum())
            seen += len(y)
            bar.update(len(y))
            bar.set_postfix(base=f"{correct['base'] / seen:.3f}", defense=f"{correct['defense'] / seen:.3f}")
    return {
        "samples": seen,
        "base": correct["base"] / seen,
        "defense": correct["defense"] / seen,
        "seconds": time.perf_counter() - start,
    }


def describe(data_dir: str | None = None) -> str:
    """What this installation has: versions, device, architectures, sources, presets and which datasets are found."""
    from .config import list_configs
    from .data import DATASETS, DataFileError
    from .models import EXTERNAL_SOURCES, list_models
    from .version import __version__

    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    lines = [
        f"advpnml {__version__}  torch {torch.__version__}  python {sys.version.split()[0]}",
        f"device: {device}, {torch.get_num_threads()} CPU threads",
        f"architectures: {', '.join(list_models())}",
        f"external checkpoint sources: {', '.join(EXTERNAL_SOURCES)}",
        f"configs: {', '.join(list_configs())}",
        "datasets:",
    ]
    for name in DATASETS:
        try:
            status = f"found ({len(load_dataset(name, 'val' if name == 'imagenet' else 'test', data_dir=data_dir))} test samples)"
        except (DataFileError, ImportError, ValueError) as err:
            status = f"not available: {str(err).splitlines()[0]}".replace("pass --download", "evaluate/train --download")
        lines.append(f"  {name:<9} {status}")
    return "\n".join(lines)
