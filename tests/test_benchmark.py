"""The benchmark measures the defense's own computation: its reference loops give the same log q."""

from __future__ import annotations

import json

import pytest
import torch

from advpnml import AdversarialPnml
from advpnml.bench.speed import (
    OVERHEAD_CASE,
    bench_pgd_overhead,
    dispatched_ops,
    format_table,
    loop_over_hypotheses,
    loop_over_samples,
    run_benchmark,
)


def test_reference_loops_compute_the_defense(tiny_cnn):
    x = torch.rand(3, 1, 28, 28)
    expected = AdversarialPnml(tiny_cnn, 0.1)(x)
    torch.testing.assert_close(loop_over_hypotheses(tiny_cnn, x, 0.1), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(loop_over_samples(tiny_cnn, x, 0.1), expected, atol=1e-5, rtol=0)


def test_benchmark_runs_and_writes_json(tmp_path):
    result = run_benchmark(["mnist_cnn"], "cpu", repeats=1, batch=2, out=tmp_path / "bench.json", log=lambda s: None)
    row = json.loads((tmp_path / "bench.json").read_text())["rows"][0]
    assert row["model"] == "mnist_cnn" and row["classes"] == 10
    assert row["floor_s"] > 0 and row["defense_over_floor"] > 0 and row["top3_speedup"] > 0
    assert row["form_floor_shared_s"] >= row["floor_s"] and row["defense_over_form_floor"] > 0
    assert "| mnist_cnn | channels_last | 2 x 10 |" in format_table(result)
    # every reference the defense is compared with is the fastest over the layouts
    assert row["memory_format"] == "channels_last"
    for part in ("base_forward", "floor_vjp_batched", "floor_forward_refined", "loop_samples", "loop_hypotheses"):
        assert set(row[f"{part}_by_layout_s"]) == {"contiguous", "channels_last"}
        assert row[f"{part}_s"] == min(row[f"{part}_by_layout_s"].values())
    assert row["defense_by_layout_s"]["channels_last"] == row["defense_s"]


def test_benchmark_runs_in_the_layout_asked_for(tmp_path):
    result = run_benchmark(["mnist_cnn"], "cpu", repeats=1, batch=2, log=lambda s: None, loops=False, memory_format="contiguous")
    row = result["rows"][0]
    assert row["memory_format"] == "contiguous" and row["defense_by_layout_s"]["contiguous"] == row["defense_s"]


def test_benchmark_can_skip_the_reference_loops(tmp_path):
    result = run_benchmark(["mnist_cnn"], "cpu", repeats=1, batch=2, log=lambda s: None, loops=False)
    row = result["rows"][0]
    assert "loop_samples_s" not in row and row["defense_over_form_floor"] > 0 and "pgd_ours_img_per_s" in row


def test_dispatched_ops_count_work_not_views():
    x = torch.rand(4, 3, requires_grad=True)
    assert dispatched_ops(lambda: (x + 1).view(-1).sign()) == 2
    # the backward's operators are counted too: mul's backward is one mul per input needing it
    assert dispatched_ops(lambda: torch.autograd.grad((x * 2).sum(), x)) > dispatched_ops(lambda: (x * 2).sum())


def test_pgd_overhead_case_is_in_the_benchmark(tmp_path):
    result = run_benchmark(["mnist_cnn"], "cpu", repeats=1, batch=2, out=tmp_path / "bench.json", log=lambda s: None, loops=False)
    overhead = json.loads((tmp_path / "bench.json").read_text())["pgd_overhead"]
    steps = OVERHEAD_CASE[-1]
    assert overhead["steps"] == steps and overhead["ours_s"] > 0
    assert overhead["ours_ops_per_call"] > 10 * steps  # a forward and a backward of a 4-layer CNN every step
    assert "launch-bound" in format_table(result)


def test_our_pgd_dispatches_no_more_operators_than_torchattacks():
    pytest.importorskip("torchattacks")
    overhead = bench_pgd_overhead(torch.device("cpu"), repeats=1)
    assert overhead["ours_ops_per_call"] <= overhead["torchattacks_ops_per_call"]


def test_pgd_profile_script_writes_a_profile_per_attack(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "pgd_profile.py"
    spec = importlib.util.spec_from_file_location("pgd_profile", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert (
        script.main(["--device", "cpu", "--batch", "2", "--steps", "2", "--repeats", "1", "--out", str(tmp_path / "p.json")]) == 0
    )
    row = json.loads((tmp_path / "p.json").read_text())["rows"][0]
    assert row["model"] == "mnist_cnn" and row["steps"] == 2
    ours = row["ours"]
    assert ours["wall_ms"] > 0 and ours["busy_ms"] > 0 and ours["ops_per_call"] > 20
    assert any("conv" in t["name"] for t in ours["top"])
