"""Speed of the defense and of the attacks, as ratios measured in one run (``advpnml bench``).

For H hypotheses the unavoidable work of the defense is one forward of the N inputs, H
input-gradient backward passes (vector-Jacobian products of that one graph), and one forward of
the N*H refined inputs. The *floor* is the sum of those three parts, each timed alone (the
backward part as the faster of the batched-VJP and expanded-batch forms, its graph built outside
the timer). That pairing is a bound no implementation reaches when the expanded backward is the
faster one (it needs its own forward of the N*H batch), so each form's whole floor is reported too.
Every number is the median of repeated runs after warm-up, with CPU threads fixed. The defense runs
in the chosen memory layout (channels_last on CPU by default); every reference it is compared with
(floor parts, base forward, naive loops) is the fastest over the layouts.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ..accel.allocator import allocator_description
from ..attacks import PGD
from ..defense import AdversarialPnml
from ..models import create_model, resolve_memory_format, set_memory_format
from ..models.layout import has_conv2d
from .hardware import bench_hardware, format_hardware

#: name -> (architecture, its kwargs, input shape, batch on CPU, batch on GPU)
CASES: dict[str, tuple[str, dict, tuple[int, ...], int, int]] = {
    "mnist_cnn": ("madry_cnn", {}, (1, 28, 28), 32, 256),
    "preact_resnet18": ("preact_resnet18", {}, (3, 32, 32), 8, 128),
    "wrn_28_10": ("wide_resnet", {}, (3, 32, 32), 2, 32),
}
#: the many-class case for top-k: the MNIST CNN with a 100-way head
TOPK_CASE = ("madry_cnn", {"num_classes": 100}, (1, 28, 28), 32, 256)
#: PGD's launch-bound case: one MNIST image and many steps, so the time is per-step overhead
#: (Python, dispatch and, on a GPU, kernel launches) rather than arithmetic
OVERHEAD_CASE: tuple[str, dict[str, Any], tuple[int, ...], int, int] = ("madry_cnn", {}, (1, 28, 28), 1, 50)


def loop_over_hypotheses(model: nn.Module, x: torch.Tensor, refine_eps: float) -> torch.Tensor:
    """log q by one forward+backward and one forward of the whole batch per hypothesis (a naive form)."""
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    log_p = []
    for label in range(num_classes):
        target = torch.full((x.shape[0],), label, device=x.device)
        xr = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), target, reduction="sum"), xr)
        refined = (x - refine_eps * grad.sign()).clamp(0, 1)
        with torch.no_grad():
            log_p.append(F.log_softmax(model(refined), 1)[:, label])
    stacked = torch.stack(log_p, 1)
    return stacked - stacked.logsumexp(1, keepdim=True)


def loop_over_samples(model: nn.Module, x: torch.Tensor, refine_eps: float) -> torch.Tensor:
    """log q one sample and one hypothesis at a time: the structure of the paper's reference code."""
    return torch.cat([loop_over_hypotheses(model, x[i : i + 1], refine_eps) for i in range(x.shape[0])])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_rounds(
    fns: Mapping[str, Callable[[], Any] | tuple[Callable[[Any], Any], Callable[[], Any]]],
    device: torch.device,
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, float]:
    """Median seconds of each function, measured in interleaved rounds (one run of each per round).

    On a shared or thermally throttled machine speed drifts over seconds; interleaving makes every
    ratio compare runs taken at the same time, and the order rotates each round so no function
    always runs first (or right after the same one). A ``(fn, setup)`` pair times ``fn(setup())`` only.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    entries = list(fns.items())
    for i in range(warmup + repeats):
        for name, entry in entries[i % len(entries) :] + entries[: i % len(entries)]:
            _sync(device)
            if isinstance(entry, tuple):  # (fn, setup): the setup's result is the argument, outside the timing
                fn, setup = entry
                arg = setup()
                _sync(device)
                start = time.perf_counter()
                fn(arg)
            else:
                start = time.perf_counter()
                entry()
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def floor_functions(model: nn.Module, x: torch.Tensor, hypotheses: int) -> dict[str, Any]:
    """The three unavoidable parts of the defense, as functions to time alone."""
    n = x.shape[0]
    labels = torch.arange(hypotheses, device=x.device).expand(n, hypotheses)
    expanded = x.unsqueeze(1).expand(n, hypotheses, *x.shape[1:]).reshape(n * hypotheses, *x.shape[1:])

    def forward_with_graph():
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            return xr, model(xr)

    def shared_graph():
        xr, logits = forward_with_graph()
        cot = logits.detach().softmax(-1).unsqueeze(0) - F.one_hot(labels.t(), logits.shape[1]).to(logits.dtype)
        return xr, logits, cot

    def expanded_graph():
        with torch.enable_grad():
            xr = expanded.detach().requires_grad_(True)
            return xr, F.cross_entropy(model(xr), labels.reshape(-1), reduction="sum")

    def refined_forward():
        with torch.no_grad():
            model(expanded)

    return {
        "floor_forward_x": forward_with_graph,
        "floor_vjp_batched": (lambda g: torch.autograd.grad(g[1], g[0], grad_outputs=g[2], is_grads_batched=True), shared_graph),
        "floor_backward_expanded": (lambda g: torch.autograd.grad(g[1], g[0]), expanded_graph),
        "floor_forward_expanded": expanded_graph,
        "floor_forward_refined": refined_forward,
    }


def random_case(
    arch: str, kwargs: dict, shape: tuple[int, ...], batch: int, device: torch.device
) -> tuple[nn.Module, torch.Tensor]:
    """A model with seeded random weights (speed does not depend on them), in eval mode, and a
    random input batch; the caller's RNG state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_model(arch, **kwargs).to(device).eval(), torch.rand(batch, *shape, device=device)


def bench_case(
    name: str,
    arch: str,
    kwargs: dict,
    shape: tuple[int, ...],
    batch: int,
    device: torch.device,
    repeats: int = 5,
    refine_eps: float = 0.1,
    loops: bool = True,
    pgd: bool = True,
    top_ks: tuple[int, ...] = (1, 3, 5),
    memory_format: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """All measurements of one model (random weights; speed does not depend on them).

    The defense, top-k and PGD run in ``memory_format`` (``"auto"``: channels_last for a conv model
    on CPU). The references they are compared with are measured in every layout and the fastest
    is kept, so a layout speed-up never flatters a ratio: the floor parts, the base forward and (on
    CPU) the naive loops are each the minimum over layouts (``*_by_layout_s`` keeps every measurement).
    """
    contiguous, x = random_case(arch, kwargs, shape, batch, device)
    layouts = {"contiguous": contiguous}
    if has_conv2d(contiguous):
        layouts["channels_last"] = set_memory_format(copy.deepcopy(contiguous), "channels_last")
    chosen = resolve_memory_format(contiguous, device, memory_format)
    model = layouts[chosen]
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    defense = AdversarialPnml(model, refine_eps, check_inputs=False)
    expanded = AdversarialPnml(model, refine_eps, check_inputs=False, gradient_mode="expanded")
    tops = {
        k: AdversarialPnml(model, refine_eps, top_k=k, check_inputs=False)
        for k in (*[k for k in top_ks if k < num_classes], num_classes)
    }

    def no_grad(fn):
        def run():
            with torch.no_grad():
                return fn(x)

        return run

    fns: dict[str, Any] = {
        "defense": no_grad(defense),
        "defense_expanded": no_grad(expanded),
        **{f"top{k}": no_grad(m) for k, m in tops.items()},
    }
    for layout, m in layouts.items():
        fns[f"base_forward@{layout}"] = no_grad(m)
        fns.update({f"{part}@{layout}": fn for part, fn in floor_functions(m, x, num_classes).items()})
        if layout != chosen:
            fns[f"defense@{layout}"] = no_grad(AdversarialPnml(m, refine_eps, check_inputs=False))
    times = measure_rounds(fns, device, repeats)
    row: dict[str, Any] = {"model": name, "arch": arch, "batch": batch, "classes": num_classes, "memory_format": chosen}
    row.update({f"{key}_s": value for key, value in times.items() if "@" not in key})
    by_layout: dict[str, dict[str, float]] = {"defense": {chosen: row["defense_s"]}}
    for key, value in times.items():
        if "@" in key:
            part, layout = key.split("@")
            by_layout.setdefault(part, {})[layout] = value
    for part, values in by_layout.items():
        row[f"{part}_by_layout_s"] = values
        if part != "defense":  # references: the fastest layout
            row[f"{part}_s"] = min(values.values())
    row["floor_s"] = (
        row["floor_forward_x_s"]
        + min(row["floor_vjp_batched_s"], row["floor_backward_expanded_s"])
        + row["floor_forward_refined_s"]
    )
    row["defense_over_floor"] = row["defense_s"] / row["floor_s"]
    # The floor above pairs the one forward of x with the faster backward form; the expanded backward
    # needs its own forward of the N*H batch, so the floor an implementation can reach is the
    # cheaper of the two whole forms.
    row["form_floor_shared_s"] = row["floor_forward_x_s"] + row["floor_vjp_batched_s"] + row["floor_forward_refined_s"]
    row["form_floor_expanded_s"] = (
        row["floor_forward_expanded_s"] + row["floor_backward_expanded_s"] + row["floor_forward_refined_s"]
    )
    row["defense_over_form_floor"] = row["defense_s"] / min(row["form_floor_shared_s"], row["form_floor_expanded_s"])
    row["defense_over_base"] = row["defense_s"] / row["base_forward_s"]
    for k in tops:
        row[f"top{k}_speedup"] = row["defense_s"] / row[f"top{k}_s"]
    if loops:
        slow: dict[str, Any] = {"defense": no_grad(defense)}
        # On a GPU the loops are launch-bound and 70-570x slower than the defense: timing them in
        # every layout would double the benchmark for nothing, so they run in the chosen layout there.
        loop_layouts = layouts if device.type == "cpu" else {chosen: model}
        for layout, m in loop_layouts.items():
            slow[f"loop_hypotheses@{layout}"] = lambda m=m: loop_over_hypotheses(m, x, refine_eps)
            slow[f"loop_samples@{layout}"] = lambda m=m: loop_over_samples(m, x, refine_eps)
        slow_times = measure_rounds(slow, device, max(1, min(repeats, 3)))
        for loop in ("loop_hypotheses", "loop_samples"):
            row[f"{loop}_by_layout_s"] = {layout: slow_times[f"{loop}@{layout}"] for layout in loop_layouts}
            row[f"{loop}_s"] = min(row[f"{loop}_by_layout_s"].values())
        row["speedup_vs_loop_hypotheses"] = row["loop_hypotheses_s"] / slow_times["defense"]
        row["speedup_vs_loop_samples"] = row["loop_samples_s"] / slow_times["defense"]
    if pgd:
        row.update(bench_pgd(model, x, device, repeats))
    log(f"  {name} ({chosen}): defense {1e3 * row['defense_s']:.1f} ms = {row['defense_over_floor']:.2f}x floor")
    return row


def pgd_contenders(model: nn.Module, x: torch.Tensor, steps: int, keep_best: bool = False) -> dict[str, Callable[[], Any]]:
    """PGD calls to compare at eps 8/255, step 2/255, random start, on the model's own predictions:
    ``ours`` (the last iterate, as torchattacks returns: equal work), ``torchattacks`` when importable,
    and with ``keep_best`` ours in its default mode (judging the last iterate too: one more forward)."""
    with torch.no_grad():
        y = model(x).argmax(1)
    ours = PGD(8 / 255, steps, 2 / 255, keep_best=False)
    fns: dict[str, Callable[[], Any]] = {"ours": lambda: ours(model, x, y)}
    if keep_best:
        best = PGD(8 / 255, steps, 2 / 255)
        fns["ours_keep_best"] = lambda: best(model, x, y)
    try:
        import torchattacks

        theirs = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=steps, random_start=True)
        fns["torchattacks"] = lambda: theirs(x, y)
    except ImportError:
        pass
    return fns


def bench_pgd(model: nn.Module, x: torch.Tensor, device: torch.device, repeats: int, steps: int = 10) -> dict[str, Any]:
    """PGD-10 images per second, ours and torchattacks' (when importable) on the same model and settings."""
    times = measure_rounds(pgd_contenders(model, x, steps, keep_best=True), device, repeats)
    out: dict[str, Any] = {f"pgd_{name}_img_per_s": x.shape[0] / t for name, t in times.items()}
    out.setdefault("pgd_torchattacks_img_per_s", None)
    if out["pgd_torchattacks_img_per_s"]:
        out["pgd_ours_over_torchattacks"] = out["pgd_ours_img_per_s"] / out["pgd_torchattacks_img_per_s"]
    return out


class _OpCounter(TorchDispatchMode):
    """Counts the operators dispatched to the backend that do work (views excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


def dispatched_ops(fn: Callable[[], Any]) -> int:
    """Operators that do work in one call of ``fn``, forward and backward (views excluded).

    The same count on any device; on a GPU each is about one kernel launch, which is what a
    launch-bound attack pays for.
    """
    with _OpCounter() as counter:
        fn()
    return counter.count


def bench_pgd_overhead(device: torch.device, repeats: int) -> dict[str, Any]:
    """PGD where overhead is everything (:data:`OVERHEAD_CASE`): seconds per call and operators
    dispatched per call, ours (last iterate, the same work as torchattacks) and torchattacks'.

    On a GPU a small batch leaves the device idle between kernels, so the attack with less host
    work and fewer launches per step wins; this measures that directly, on any device.
    """
    arch, kwargs, shape, batch, steps = OVERHEAD_CASE
    model, x = random_case(arch, kwargs, shape, batch, device)
    fns = pgd_contenders(model, x, steps)
    times = measure_rounds(fns, device, repeats)
    out: dict[str, Any] = {"model": arch, "batch": batch, "steps": steps}
    for name, fn in fns.items():
        out[f"{name}_s"] = times[name]
        out[f"{name}_ops_per_call"] = dispatched_ops(fn)
    if "torchattacks" in fns:
        out["ours_over_torchattacks"] = times["torchattacks"] / times["ours"]  # > 1: ours is faster
    return out


def run_benchmark(
    cases: list[str] | None = None,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    repeats: int = 5,
    batch: int | None = None,
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    loops: bool = True,
    memory_format: str = "auto",
    accel: bool = False,
) -> dict[str, Any]:
    """Benchmark the named cases (default: all of :data:`CASES` plus the 100-class top-k case), then
    PGD's launch-bound case (:func:`bench_pgd_overhead`) when any case runs PGD.

    ``loops=False`` skips the naive reference loops (the slow part), for a quick re-check. ``accel`` adds,
    per case of :data:`CASES`, the hardware rows of :mod:`advpnml.bench.hardware` (FLOPs, TFLOP/s, peak
    fraction; bf16, channels_last and CUDA-graph variants) under ``result["hardware"]``.
    """
    device = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
    names = cases or list(CASES) + ["mnist_cnn_100"]
    unknown = set(names) - set(CASES) - {"mnist_cnn_100"}
    if unknown:
        raise ValueError(f"unknown benchmark case(s) {sorted(unknown)}; expected: {', '.join([*CASES, 'mnist_cnn_100'])}")
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "allocator": allocator_description(),
        "repeats": repeats,
        "seconds": 0.0,
        "rows": [],
    }
    start = time.perf_counter()

    def save() -> None:  # after every measurement, so a run cut short keeps what it measured
        result["seconds"] = time.perf_counter() - start
        if out is not None:
            path = Path(out)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2) + "\n")

    for name in names:
        arch, kwargs, shape, cpu_batch, gpu_batch = TOPK_CASE if name == "mnist_cnn_100" else CASES[name]
        size = batch or (gpu_batch if device.type == "cuda" else cpu_batch)
        many = name == "mnist_cnn_100"
        result["rows"].append(
            bench_case(
                name,
                arch,
                kwargs,
                shape,
                size,
                device,
                repeats,
                loops=loops and not many,
                pgd=not many,
                memory_format=memory_format,
                log=log,
            )
        )
        save()
    if any(name in CASES for name in names):
        result["pgd_overhead"] = bench_pgd_overhead(device, repeats)
        save()
    for name in [n for n in names if n in CASES] if accel else []:
        arch, kwargs, shape, cpu_batch, gpu_batch = CASES[name]
        model, x = random_case(arch, kwargs, shape, batch or (gpu_batch if device.type == "cuda" else cpu_batch), device)
        result.setdefault("hardware", []).append(
            bench_hardware(name, model, x, device, result["device"], repeats, measure_rounds, log=log)
        )
        save()
    return result


def _number(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def format_table(result: dict[str, Any]) -> str:
    """The benchmark as a Markdown table (times in ms, ratios as x)."""

    def ms(v):
        return "-" if v is None else f"{1e3 * v:.1f}"

    def ratio(v):
        return "-" if v is None else f"{v:.2f}x"

    lines = [
        f"device: {result['device']}, {result['threads']} threads, torch {result['torch']}, median of {result['repeats']}, "
        f"CPU allocator: {result.get('allocator', 'default')}",
        "",
        "| model | layout | batch x C | base fwd ms | defense ms | floor ms | defense / floor | defense / its form's floor | "
        "vs loop over hypotheses | vs per-sample loop | top-1 / top-3 / top-5 speed-up | PGD-10 img/s ours | torchattacks | "
        "ours / theirs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        tops = " / ".join(ratio(r.get(f"top{k}_speedup")) for k in (1, 3, 5))
        theirs = r.get("pgd_torchattacks_img_per_s")
        lines.append(
            f"| {r['model']} | {r.get('memory_format', 'contiguous')} | {r['batch']} x {r['classes']} | "
            f"{ms(r['base_forward_s'])} | {ms(r['defense_s'])} | {ms(r['floor_s'])} | "
            f"{ratio(r['defense_over_floor'])} | {ratio(r.get('defense_over_form_floor'))} | "
            f"{ratio(r.get('speedup_vs_loop_hypotheses'))} | {ratio(r.get('speedup_vs_loop_samples'))} | "
            f"{tops} | {_number(r.get('pgd_ours_img_per_s'))} | {_number(theirs)} | "
            f"{ratio(r.get('pgd_ours_over_torchattacks'))} |"
        )
    o = result.get("pgd_overhead")
    if o:
        theirs = (
            (
                f"torchattacks {ms(o['torchattacks_s'])} ms, {o['torchattacks_ops_per_call']} ops; "
                f"ours / theirs {ratio(o['ours_over_torchattacks'])}"
            )
            if "torchattacks_s" in o
            else "torchattacks not installed"
        )
        lines += [
            "",
            f"PGD-{o['steps']} launch-bound ({o['model']}, batch {o['batch']}; time per call, operators dispatched per call): "
            f"ours {ms(o['ours_s'])} ms, {o['ours_ops_per_call']} ops; {theirs}",
        ]
    if result.get("hardware"):
        lines += ["", format_hardware(result["hardware"], result["device"])]
    return "\n".join(lines)
