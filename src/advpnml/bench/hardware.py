"""How near the hardware the defense and the attacks run: ``advpnml bench --accel`` (issue 18).

Per model: the FLOPs of one call (counted, :mod:`advpnml.accel.flops`), and for each execution variant the
time, the achieved TFLOP/s and the fraction of the device's dense peak for its dtype. The variants:
``fp32`` (the default: contiguous layout, eager), ``fp32_cl`` (channels_last), ``bf16_cl`` (bf16
autocast, channels_last, :mod:`advpnml.accel.precision`), each attack also ``+graph`` (the whole run
captured as one CUDA graph, :class:`~advpnml.accel.graphs.GraphedAttack`; eager off CUDA). torchattacks'
PGD is timed in both layouts and its faster one is the reference, so a layout never flatters a ratio.
Every ratio compares runs interleaved in one :func:`~advpnml.bench.speed.measure_rounds` call.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from ..accel.flops import count_flops, rate
from ..accel.graphs import GraphedAttack
from ..accel.precision import with_precision
from ..attacks import APGD, PGD
from ..defense import AdversarialPnml
from ..models import set_memory_format
from ..models.layout import has_conv2d

EPS, STEP = 8 / 255, 2 / 255
#: what is timed: the defense's forward, PGD and APGD on the base model, PGD through the defense
KINDS = ("defense", "pgd", "apgd", "adaptive")


def variants(model: nn.Module) -> dict[str, nn.Module]:
    """The execution variants of ``model`` (shared weights are copied per layout, never changed)."""
    out = {"fp32": model}
    if has_conv2d(model):
        out["fp32_cl"] = set_memory_format(copy.deepcopy(model), "channels_last")
    out["bf16_cl"] = with_precision(out.get("fp32_cl", model), "bf16")
    return out


def _dtype(variant: str) -> str:
    return "bf16" if variant.startswith("bf16") else "tf32"


def contenders(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, pgd_steps: int = 10, apgd_steps: int = 100, refine_eps: float = 0.1
) -> dict[str, Callable[[], Any]]:
    """Every timed call: ``defense/<variant>``, ``pgd/<variant>[+graph]``, ``apgd/<variant>[+graph]`` (APGD on the
    default and the last variant only: it costs ten PGD-10s), ``adaptive/<variant>[+graph]`` (PGD-10 through the
    defense, the paper's adaptive attack; fp32 only) and ``pgd/torchattacks@<layout>`` when importable."""
    fns: dict[str, Callable[[], Any]] = {}
    models = variants(model)
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    for name, m in models.items():
        # A fixed chunk size: the memory-budget default asks the driver for free memory, which a graph cannot hold.
        defense = AdversarialPnml(m, refine_eps, check_inputs=False, max_batch=x.shape[0] * classes)
        fns[f"defense/{name}"] = partial(_no_grad, defense, x)
        if not name.startswith("bf16"):  # bf16 evaluates the base model only (advpnml.evaluation.engine.check_precision_for)
            adaptive = PGD(EPS, pgd_steps, STEP, keep_best=False)
            if name == "fp32":
                fns[f"adaptive/{name}"] = partial(adaptive, defense, x, y)
            graphed = GraphedAttack(adaptive)
            fns[f"adaptive/{name}+graph"] = partial(graphed, defense, x, y)
        pgd = PGD(EPS, pgd_steps, STEP, keep_best=False)
        fns[f"pgd/{name}"] = partial(pgd, m, x, y)
        graphed_pgd = GraphedAttack(pgd)
        fns[f"pgd/{name}+graph"] = partial(graphed_pgd, m, x, y)
        if name in ("fp32", list(models)[-1]):
            apgd = APGD(EPS, apgd_steps, early_stop=False)
            fns[f"apgd/{name}"] = partial(apgd, m, x, y)
            graphed_apgd = GraphedAttack(apgd)
            fns[f"apgd/{name}+graph"] = partial(graphed_apgd, m, x, y)
    try:
        import torchattacks
    except ImportError:
        return fns
    for name in ("fp32", "fp32_cl"):
        if name in models:
            theirs = torchattacks.PGD(models[name], eps=EPS, alpha=STEP, steps=pgd_steps, random_start=True)
            fns[f"pgd/torchattacks@{name}"] = partial(theirs, x, y)
    return fns


def _no_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def bench_hardware(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    device: torch.device,
    device_name: str,
    repeats: int,
    measure: Callable[..., dict[str, float]],
    pgd_steps: int = 10,
    apgd_steps: int = 100,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """One model's row: seconds, images/s, TFLOP/s and peak fraction per contender, and the ratios issue 18 targets
    (best defense variant over fp32 eager; best PGD-10 and APGD-100 per-step throughput over torchattacks' PGD), each
    also among the fp32 variants alone (``*_fp32``): bf16 keeps the base model's attack outcomes but not the defense's
    (``results/precision_agreement_cpu``), so only the fp32 numbers speak for attacks through the defense."""
    with torch.no_grad():
        y = model(x).argmax(1)
    fns = contenders(model, x, y, pgd_steps, apgd_steps)
    for key, fn in fns.items():  # graphs capture on their third call; every variant gets the same warm-up
        if key.endswith("+graph"):
            fn(), fn()
    flops = {kind: count_flops(fns[f"{kind}/fp32"]) for kind in KINDS}
    times = measure(fns, device, repeats)
    row: dict[str, Any] = {
        "model": name,
        "batch": x.shape[0],
        "flops": flops,
        "pgd_steps": pgd_steps,
        "apgd_steps": apgd_steps,
        "contenders": {},
    }
    for key, seconds in times.items():
        kind = key.split("/")[0]
        variant = key.split("/")[1].split("+")[0]
        entry: dict[str, float | None] = {"seconds": seconds, "img_per_s": x.shape[0] / seconds}
        if "torchattacks" not in variant:
            entry.update(rate(flops[kind], seconds, device_name, _dtype(variant)))
        row["contenders"][key] = entry
    ours = [k for k in times if "torchattacks" not in k]
    best = {kind: min((k for k in ours if k.startswith(kind + "/")), key=lambda k: times[k]) for kind in KINDS}
    best_fp32 = {kind: min((k for k in ours if k.startswith(kind + "/fp32")), key=lambda k: times[k]) for kind in KINDS}
    row["best"], row["best_fp32"] = best, best_fp32
    row["defense_speedup"] = times["defense/fp32"] / times[best["defense"]]
    row["defense_speedup_fp32"] = times["defense/fp32"] / times[best_fp32["defense"]]
    row["adaptive_speedup"] = times["adaptive/fp32"] / times[best["adaptive"]]
    theirs = [t for k, t in times.items() if "torchattacks" in k]
    if theirs:
        step_rate = x.shape[0] * pgd_steps / min(theirs)  # torchattacks' PGD (fp32, its faster layout), image-steps per second
        for suffix, chosen in (("", best), ("_fp32", best_fp32)):
            row["pgd_over_torchattacks" + suffix] = x.shape[0] * pgd_steps / times[chosen["pgd"]] / step_rate
            row["apgd_steps_over_torchattacks_pgd" + suffix] = x.shape[0] * apgd_steps / times[chosen["apgd"]] / step_rate
    log(
        f"  {name}: defense best {best['defense']} {row['defense_speedup']:.2f}x fp32; PGD best {best['pgd']}"
        + (f" {row['pgd_over_torchattacks']:.2f}x torchattacks" if theirs else "")
    )
    return row


def format_hardware(rows: list[dict[str, Any]], device_name: str) -> str:
    """The ``--accel`` rows as Markdown: one line per model and contender."""
    known = any(e.get("peak_fraction") is not None for r in rows for e in r["contenders"].values())
    peak = (
        "peak fraction against the dense TF32 (fp32 variants) or bf16 tensor-core peak"
        if known
        else "no peak on file for this device (advpnml.accel.flops.PEAK_TFLOPS)"
    )
    lines = [
        f"device: {device_name}; {peak}",
        "",
        "| model | call | GFLOP | ms | img/s | TFLOP/s | of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for key, e in r["contenders"].items():
            gflop = r["flops"][key.split("/")[0]] / 1e9 if "torchattacks" not in key else None
            frac, tflops = e.get("peak_fraction"), e.get("tflops")
            cells = [
                "-" if gflop is None else f"{gflop:.1f}",
                f"{1e3 * e['seconds']:.1f}",
                f"{e['img_per_s']:.0f}",
                "-" if tflops is None else f"{tflops:.2f}",
                "-" if frac is None else f"{100 * frac:.1f}%",
            ]
            lines.append(f"| {r['model']} (batch {r['batch']}) | {key} | " + " | ".join(cells) + " |")
        ratios = [
            f"defense {r['defense_speedup']:.2f}x fp32 eager ({r['best']['defense']}; fp32 only: "
            f"{r['defense_speedup_fp32']:.2f}x, {r['best_fp32']['defense']})",
            f"adaptive PGD-{r['pgd_steps']} {r['adaptive_speedup']:.2f}x fp32 eager ({r['best']['adaptive']})",
        ]
        if "pgd_over_torchattacks" in r:
            ratios += [
                f"PGD-{r['pgd_steps']} {r['pgd_over_torchattacks']:.2f}x torchattacks ({r['best']['pgd']}; fp32 only: "
                f"{r['pgd_over_torchattacks_fp32']:.2f}x, {r['best_fp32']['pgd']})",
                f"APGD-{r['apgd_steps']} per step {r['apgd_steps_over_torchattacks_pgd']:.2f}x torchattacks' PGD "
                f"({r['best']['apgd']}; fp32 only: {r['apgd_steps_over_torchattacks_pgd_fp32']:.2f}x)",
            ]
        lines.append(f"| {r['model']} | ratios | {'; '.join(ratios)} | | | | |")
    return "\n".join(lines)
