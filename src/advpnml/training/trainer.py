"""Training base models: standard, Madry PGD and fast (Wong et al. 2020) adversarial training.

The defense is meant for adversarially trained models. Every epoch writes a resumable
checkpoint (weights, optimizer, scheduler, epoch); shuffling and attack noise come from
generators seeded by (seed, epoch, batch), never from the global RNG, so a resumed run on CPU
gives exactly the weights of an uninterrupted one. The last ``adaptive_epochs`` epochs can train
against the adaptive attack on the defended model, as the paper's MNIST model did (appendix A).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import PGD, project
from ..config import Preset
from ..data import LabeledDataset, as_tensors, dataset_bounds
from ..defense import AdversarialPnml
from ..evaluation.identity import data_digest
from ..evaluation.lock import hold
from ..models import create_model, load_checkpoint, load_external, read_checkpoint, save_checkpoint, use_memory_format
from ..models.checkpoint import load_weights
from ..models.registry import to_plain
from ..runtime import Runtime
from ..validation import check_nonnegative
from .step import GraphedPgdStep, update_step

METHODS = ("standard", "pgd", "fast")


@dataclass
class TrainConfig:
    """One training run. Units: eps and step sizes in pixel scale [0, 1]."""

    arch: str = "madry_cnn"
    arch_kwargs: dict[str, Any] | None = None
    method: str = "pgd"
    epochs: int = 10
    batch_size: int = 50
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_schedule: str = "constant"  # "constant", "cyclic" (linear up to lr at mid-training, then down to 0)
    # or "step" (times lr_gamma at each epoch of lr_milestones)
    lr_milestones: list[int] | None = None
    lr_gamma: float = 0.1
    eps: float = 0.3
    attack_steps: int = 40  # PGD training attack
    attack_step_size: float = 0.01
    fast_step_size: float | None = None  # FGSM step of fast AT; default 1.25 * eps
    eps_warmup_epochs: int = 0  # ramp eps linearly from 0 over these epochs
    adaptive_epochs: int = 0  # last epochs: attack the defended model end to end
    refine_eps: float = 0.1  # lambda of the defense used by adaptive epochs
    seed: int = 0
    init_from: str | None = None  # fine-tune: start from this checkpoint's weights instead of a random init
    init_source: str | None = None  # read init_from as an external file (see advpnml.models.EXTERNAL_SOURCES)

    def __post_init__(self) -> None:
        for name, (kind, low) in _FIELD_TYPES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if not _of_kind(value, kind) or (low is not None and value < low):
                wanted = {
                    "int": "a whole number",
                    "float": "a finite number",
                    "str": "a string",
                    "dict": "a table",
                    "list": "a list of whole numbers",
                }[kind] + ("" if low is None else f" >= {low:g}")
                raise ValueError(f"[training] {name} must be {wanted}, got {value!r}")
        if self.method not in METHODS:
            raise ValueError(f"unknown training method {self.method!r}; expected one of: {', '.join(METHODS)}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected 'sgd' or 'adam'")
        if self.lr_schedule not in ("constant", "cyclic", "step"):
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; expected 'constant', 'cyclic' or 'step'")
        if self.lr_schedule == "step" and not self.lr_milestones:
            raise ValueError("lr_schedule 'step' needs lr_milestones, the epochs at which lr is multiplied by lr_gamma")
        check_nonnegative("eps", self.eps)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")

    @classmethod
    def from_preset(cls, preset: Preset, **overrides: Any) -> TrainConfig:
        """From a preset's ``[model]``, ``[training]`` and ``[defense]`` sections (unknown keys are errors);
        ``overrides`` that are not None (the command line's) win."""
        training = preset.section("training")
        model = preset.section("model")
        model_arch = model.pop("arch", "madry_cnn")
        arch = training.pop("arch", model_arch)
        if arch != model_arch:
            model = {}  # [model] options belong to the evaluated architecture, not to a different training one
        known = {f.name for f in fields(cls)}
        unknown = set(training) - known
        if unknown:
            raise ValueError(f"unknown [training] keys {sorted(unknown)}; known: {', '.join(sorted(known))}")
        values = {"arch": arch, "arch_kwargs": model or None, **training}
        if "refine_eps" in preset.section("defense"):
            values.setdefault("refine_eps", preset.defense().refine_eps)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


#: Each field's type and least value (None: any), checked before anything trains: ``epochs = 2.5`` or
#: ``lr = "fast"`` in a preset are one line naming the key, not a TypeError mid-epoch.
_FIELD_TYPES: dict[str, tuple[str, float | None]] = {
    "arch": ("str", None),
    "arch_kwargs": ("dict", None),
    "method": ("str", None),
    "epochs": ("int", 1),
    "batch_size": ("int", 1),
    "optimizer": ("str", None),
    "lr": ("float", 0),
    "momentum": ("float", 0),
    "weight_decay": ("float", 0),
    "lr_schedule": ("str", None),
    "lr_milestones": ("list", None),
    "lr_gamma": ("float", 0),
    "eps": ("float", 0),
    "attack_steps": ("int", 1),
    "attack_step_size": ("float", 0),
    "fast_step_size": ("float", 0),
    "eps_warmup_epochs": ("int", 0),
    "adaptive_epochs": ("int", 0),
    "refine_eps": ("float", 0),
    "seed": ("int", None),
    "init_from": ("str", None),
    "init_source": ("str", None),
}
_OPTIONAL = {"arch_kwargs", "lr_milestones", "fast_step_size", "init_from", "init_source"}


def _of_kind(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, (int, float)) and math.isfinite(value)
    if kind == "list":
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return isinstance(value, {"str": str, "dict": dict}[kind])


def lr_at(config: TrainConfig, progress: float) -> float:
    """Learning rate at ``progress`` in [0, 1] of the whole run."""
    if config.lr_schedule == "cyclic":
        return config.lr * (2 * progress if progress < 0.5 else 2 * (1 - progress))
    if config.lr_schedule == "step":
        epoch = progress * config.epochs
        return config.lr * config.lr_gamma ** sum(epoch >= m for m in config.lr_milestones or [])
    return config.lr


def eps_at(config: TrainConfig, epoch_progress: float) -> float:
    """Training eps after ``epoch_progress`` epochs (linear warm-up, then constant)."""
    if config.eps_warmup_epochs <= 0:
        return config.eps
    return config.eps * min(1.0, epoch_progress / config.eps_warmup_epochs)


def adversarial_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    eps: float,
    epoch: int,
    seed: int,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """The training inputs of one batch for the configured method (clean inputs for standard training)."""
    if config.method == "standard" or eps == 0:
        return x
    if epoch >= config.epochs - config.adaptive_epochs:
        defended = AdversarialPnml(model, config.refine_eps, bounds=bounds, check_inputs=False)
        return PGD(eps, config.attack_steps, config.attack_step_size, bounds=bounds, seed=seed)(defended, x, y)
    if config.method == "pgd":
        return PGD(eps, config.attack_steps, config.attack_step_size, bounds=bounds, seed=seed)(model, x, y)
    # Fast AT: uniform start in the eps-ball, one FGSM step of 1.25 eps, projected (Wong et al. 2020).
    gen = torch.Generator(device=x.device).manual_seed(seed)
    step = config.fast_step_size if config.fast_step_size is not None else 1.25 * eps
    x_adv = project(x + (torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1) * eps, x, eps, bounds)
    x_adv.requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
    finally:
        model.train(was_training)
    return project(x_adv.detach() + step * grad.sign(), x, eps, bounds)


def train(
    config: TrainConfig,
    train_set: LabeledDataset,
    out_dir: str | os.PathLike,
    val_set: LabeledDataset | None = None,
    runtime: Runtime | None = None,
    resume: bool = False,
    dataset_name: str | None = None,
    stop_after: int | None = None,
    time_limit: float | None = None,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train per ``config``; writes ``last.pt`` every epoch, ``model.pt`` at the end, ``metrics.csv``/``.png``.

    With ``resume=True`` and an existing ``last.pt`` the run continues from the epoch after it.
    ``stop_after`` ends this call after that many epochs; ``time_limit`` (seconds) ends it before an
    epoch that, at the pace of the last one, would end past the limit. Either way ``last.pt`` is
    complete and ``resume=True`` continues from it (for job time limits and preemptible machines).

    Under torchrun (``runtime.dist``, from :func:`advpnml.runtime.start_runtime`) the model is
    wrapped in DistributedDataParallel and every global batch of ``config.batch_size`` samples is
    split across the ranks, each loss weighted by its share, so the averaged gradient is the
    one-process gradient of the same batch: W processes follow the single-process run (same batches,
    same learning rate) up to float summation order. Only rank 0 writes files and logs.

    ``runtime.memory_format="auto"`` trains a conv model channels_last on CPU: a PGD-training step of the
    Madry CNN (batch 50) 140 vs 171 ms, but float sums run in another order, so the trained model
    differs slightly (the demo's worst cases: base 68 / defense 19% vs 69 / 24%). Without a runtime,
    ``contiguous``: the layout every recorded result in ``results/`` was trained with.

    ``runtime.cuda_graphs`` runs each PGD-training step as one captured CUDA graph
    (:class:`~advpnml.training.step.GraphedPgdStep`): the same values (bit for bit on CPU, where it runs
    eagerly), one launch per step on a GPU instead of the thousands a PGD-40 step issues.
    """
    runtime = (runtime or Runtime(memory_format="contiguous")).for_rank()
    with hold(out_dir if runtime.is_main else None, runtime.log):  # one writer per folder (see advpnml.evaluation.lock)
        return _train(config, train_set, Path(out_dir), val_set, runtime, resume, dataset_name, stop_after, time_limit)


def _train(
    config: TrainConfig,
    train_set: LabeledDataset,
    out: Path,
    val_set: LabeledDataset | None,
    runtime: Runtime,
    resume: bool,
    dataset_name: str | None,
    stop_after: int | None,
    time_limit: float | None,
) -> tuple[nn.Module, list[dict[str, float]]]:
    from tqdm.auto import tqdm

    ctx, device, log, progress = runtime.dist, runtime.device, runtime.log, runtime.progress
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # seeded initialization without touching the caller's RNG
        torch.manual_seed(config.seed)
        model = create_model(config.arch, **(config.arch_kwargs or {}))
    if config.init_from:
        initial = (
            load_external(config.init_from, config.init_source) if config.init_source else load_checkpoint(config.init_from)[0]
        )
        load_weights(model, initial.state_dict(), source=config.init_from, arch=config.arch)
    optimizer = _optimizer(model, config)
    history: list[dict[str, float]] = []
    start_epoch = 0
    last = out / "last.pt"
    data_sha256 = data_digest(train_set)
    if resume and last.exists():
        payload = read_checkpoint(last)
        if payload.get("train_config") != to_plain(asdict(config)):
            raise ValueError(f"{last} was written with other training settings; use another --out or drop --resume")
        if payload.get("data_sha256", data_sha256) != data_sha256:
            raise ValueError(
                f"{last} was trained on other data (sha256 {payload['data_sha256']} -> {data_sha256}: another "
                "--samples or dataset); use another --out or drop --resume"
            )
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        start_epoch = int(payload["epoch"]) + 1
        history = list(payload["history"])
        log(f"resuming from {last} at epoch {start_epoch + 1}/{config.epochs}")
    model.to(device)
    x_all, y_all = as_tensors(train_set)
    use_memory_format(model, device, runtime.memory_format, example=x_all[:2])
    _optimizer_to(optimizer, device)
    trained = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    bounds = dataset_bounds(train_set)
    n = x_all.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    use_amp = device.type == "cuda" and config.method == "fast"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    graphed = _graphed_step(config, model, trained, optimizer, bounds, runtime)
    if graphed is not None:
        x_all, y_all = (
            x_all.to(device),
            y_all.to(device),
        )  # one copy: a step's batch is then gathered on the device, not sent from the host
    end_epoch = config.epochs if stop_after is None else min(config.epochs, start_epoch + stop_after)
    started = time.perf_counter()
    for epoch in range(start_epoch, end_epoch):
        t0 = time.perf_counter()
        if time_limit is not None and epoch > start_epoch:
            # Ranks decide together: one rank stopping alone would leave the others waiting in DDP.
            late = t0 - started + history[-1]["seconds"] > time_limit
            if ctx.sum([float(late)])[0] > 0:
                end_epoch = epoch
                break
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
        order = order if graphed is None else order.to(device)
        sums, seen = torch.zeros(3, dtype=torch.float64, device=device), 0  # loss * n, adversarially correct, clean correct
        bar = tqdm(
            range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs} [{config.method}]", disable=not progress, leave=False
        )
        for step in bar:
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            if len(batch) < ctx.world_size:
                continue  # a last batch too small to give every rank a sample; all ranks skip it alike
            idx = batch[ctx.rank :: ctx.world_size]
            x, y = x_all[idx].to(device), y_all[idx].to(device)
            progress_frac = (epoch + step / steps_per_epoch) / config.epochs
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, progress_frac)
            eps = eps_at(config, epoch + step / steps_per_epoch)
            seed = config.seed * 1_000_003 + epoch * 100_003 + step + ctx.rank * 7_919
            if graphed is not None and eps > 0:
                sums += graphed(x, y, eps, epoch >= config.epochs - config.adaptive_epochs, seed)
            else:
                x_train = adversarial_batch(model, x, y, config, eps, epoch, bounds=bounds, seed=seed)
                # DDP averages gradients over ranks; weighting by the rank's share makes that the batch mean.
                share = len(idx) * ctx.world_size / len(batch) if ctx.enabled else None
                sums += update_step(model, trained, optimizer, scaler, x, y, x_train, share, use_amp)
            seen += len(y)
            if step % 20 == 0 or step == steps_per_epoch - 1:  # reading the sums waits for the device: not every step
                loss_sum, adv, clean = sums.tolist()
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", clean=f"{clean / seen:.3f}", adv=f"{adv / seen:.3f}")
        bar.close()
        totals = dict(zip(("loss", "adv", "clean", "seen"), ctx.sum([*sums.tolist(), seen])))
        row = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "eps": eps,
            "loss": totals["loss"] / totals["seen"],
            "train_clean_acc": totals["clean"] / totals["seen"],
            "train_adv_acc": totals["adv"] / totals["seen"],
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        log(
            f"epoch {epoch + 1}/{config.epochs}: loss {row['loss']:.4f}, clean {100 * row['train_clean_acc']:.1f}%, "
            f"adv {100 * row['train_adv_acc']:.1f}% ({row['seconds']:.1f} s)"
        )
        if ctx.is_main:
            save_checkpoint(
                last,
                model,
                dataset=dataset_name,
                training=config.method,
                eps=config.eps,
                state={
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "history": history,
                    "train_config": to_plain(asdict(config)),
                    "data_sha256": data_sha256,
                },
            )
            _write_metrics(out, history)
    model.eval()
    if end_epoch < config.epochs:
        log(f"stopped after epoch {end_epoch}/{config.epochs}; rerun with --resume to continue")
        ctx.barrier()
        return model, history
    if ctx.is_main:
        save_checkpoint(
            out / "model.pt",
            model,
            dataset=dataset_name,
            training=config.method,
            eps=config.eps,
            extra={"train_config": to_plain(asdict(config))},
        )
    if val_set is not None and ctx.is_main:
        validation = validate(model, val_set, config, device)
        (out / "validation.json").write_text(json.dumps(validation, indent=2) + "\n")
        log(
            f"validation on {validation['samples']} held-out samples: clean {100 * validation['clean_acc']:.1f}%, "
            f"PGD-{validation['pgd_steps']} at eps {config.eps:g}: {100 * validation['pgd_acc']:.1f}%"
        )
    ctx.barrier()
    return model, history


def _graphed_step(
    config: TrainConfig,
    model: nn.Module,
    trained: nn.Module,
    optimizer: torch.optim.Optimizer,
    bounds: tuple[float, float] | None,
    runtime: Runtime,
) -> GraphedPgdStep | None:
    """The CUDA-graph step ``runtime.cuda_graphs`` asks for, or None (logged) where it does not apply.

    Off CUDA the step still runs, eagerly (:class:`~advpnml.accel.graphs.GraphedStep` falls back): the same values."""
    if not runtime.cuda_graphs:
        return None
    why = (
        "it captures PGD training, not " + config.method
        if config.method != "pgd"
        else "it captures SGD, whose update reads no step counter, not " + config.optimizer
        if config.optimizer != "sgd"
        else "DistributedDataParallel's gradient hooks are not captured"
        if runtime.dist.enabled
        else None
    )
    if why:
        runtime.log(f"--cuda-graphs ignored: {why}; training eagerly")
        return None
    return GraphedPgdStep(
        model, trained, optimizer, config.attack_steps, config.attack_step_size, config.refine_eps, bounds, runtime.log
    )


def validate(
    model: nn.Module,
    dataset: LabeledDataset,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    steps: int = 20,
    batch_size: int = 200,
) -> dict[str, float]:
    """Held-out clean accuracy and PGD accuracy (``steps`` steps of eps/4 ... at least 2.5 eps in total)."""
    x_all, y_all = as_tensors(dataset)
    model = model.to(device).eval()
    step_size = max(2.5 * config.eps / steps, config.eps / 10)
    attack = PGD(config.eps, steps, step_size, seed=config.seed, bounds=dataset_bounds(dataset))
    clean = adv = 0
    for i in range(0, x_all.shape[0], batch_size):
        x, y = x_all[i : i + batch_size].to(device), y_all[i : i + batch_size].to(device)
        with torch.no_grad():
            clean += int((model(x).argmax(1) == y).sum())
        x_adv = attack(model, x, y)
        with torch.no_grad():
            adv += int((model(x_adv).argmax(1) == y).sum())
    n = x_all.shape[0]
    return {
        "samples": n,
        "clean_acc": clean / n,
        "pgd_acc": adv / n,
        "pgd_steps": steps,
        "pgd_step_size": step_size,
        "eps": config.eps,
    }


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for state in optimizer.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                state[k] = v.to(device)


def _write_metrics(out: Path, history: list[dict[str, float]]) -> None:
    """``metrics.csv`` and ``metrics.png``; a full disk is one line (the checkpoint of the epoch is already saved)."""
    try:
        with open(out / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
    except OSError as err:
        raise ValueError(
            f"cannot write {out / 'metrics.csv'}: {err.strerror or err}; last.pt is saved, --resume continues"
        ) from None
    from ..plotting import pyplot, save_figure

    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [h["loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Loss")
    ax_acc.plot(epochs, [100 * h["train_clean_acc"] for h in history], marker="o", label="clean")
    ax_acc.plot(epochs, [100 * h["train_adv_acc"] for h in history], marker="s", label="adversarial (training attack)")
    ax_acc.set(xlabel="epoch", ylabel="training accuracy (%)", title="Accuracy")
    ax_acc.legend()
    fig.tight_layout()
    save_figure(fig, out / "metrics", formats=("png",), dpi=120)
