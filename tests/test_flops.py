"""FLOPs counted by our dispatch mode match torch's FlopCounterMode and closed forms, and work around the defense."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from advpnml.accel.flops import count_flops, peak_tflops, rate
from advpnml.bench.hardware import bench_hardware, format_hardware
from advpnml.bench.speed import measure_rounds
from advpnml.defense import AdversarialPnml


def test_closed_forms():
    x = torch.rand(3, 10)
    assert count_flops(lambda: nn.Linear(10, 5)(x)) == 2 * 3 * 10 * 5
    conv, image = nn.Conv2d(2, 4, 3, padding=1), torch.rand(1, 2, 8, 8)
    assert count_flops(lambda: conv(image)) == 2 * 8 * 8 * 4 * 2 * 3 * 3


def test_the_model_alone_matches_flop_counter_mode_and_the_defense_is_counted(tiny_cnn):
    x = torch.rand(4, 1, 28, 28)
    with FlopCounterMode(display=False) as reference:
        tiny_cnn(x)
    forward = count_flops(lambda: tiny_cnn(x))
    assert forward == reference.get_total_flops() > 0
    with torch.no_grad():
        defense = count_flops(lambda: AdversarialPnml(tiny_cnn, 0.1, check_inputs=False)(x))
    # one forward of x, ten input-gradient backward passes (each about one forward or more), ten refined forwards
    assert 21 * forward <= defense <= 32 * forward


def test_peaks_and_rates():
    assert peak_tflops("NVIDIA H200", "bf16") == 989.4 and peak_tflops("x86_64", "fp32") is None
    r = rate(2 * 10**12, 0.5, "NVIDIA H100 80GB HBM3", "tf32")
    assert r["tflops"] == pytest.approx(4.0) and r["peak_fraction"] == pytest.approx(4.0 / 494.7)


def test_the_hardware_rows_run_every_variant_on_cpu(tiny_cnn):
    x = torch.rand(2, 1, 28, 28)
    row = bench_hardware(
        "tiny", tiny_cnn, x, torch.device("cpu"), "x86_64", 1, measure_rounds, pgd_steps=1, apgd_steps=2, log=lambda m: None
    )
    keys = set(row["contenders"])
    assert {
        "defense/fp32",
        "defense/fp32_cl",
        "defense/bf16_cl",
        "pgd/bf16_cl+graph",
        "apgd/fp32+graph",
        "adaptive/fp32",
        "adaptive/fp32_cl+graph",
    } <= keys and "adaptive/bf16_cl" not in keys
    assert all(v > 0 for v in row["flops"].values()) and row["defense_speedup"] > 0
    assert "| tiny (batch 2) | defense/fp32 |" in format_hardware([row], "x86_64")
