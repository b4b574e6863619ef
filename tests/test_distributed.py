"""torchrun on CPU (gloo, 2 processes): training and evaluation follow the single-process run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist

from advpnml.distributed import DistContext
from advpnml.models import load_checkpoint, save_checkpoint

from .conftest import write_eval_config

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo needed"
)


def _env() -> dict[str, str]:
    # One thread per process in both runs, so float reductions happen in the same order.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _single(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "advpnml", *args]


def _torchrun(args: list[str], nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "advpnml", *args]


def test_shard_is_round_robin_and_covers_everything():
    items = list(range(7))
    shards = [DistContext(rank, 3).shard(items) for rank in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert DistContext().shard(items) == items and DistContext().sum([1.0, 2.0]) == [1.0, 2.0]


def test_ddp_training_with_two_processes_follows_the_single_process_run(tmp_path):
    args = [
        "train",
        "--config",
        "toy2d",
        "--method",
        "standard",
        "--epochs",
        "2",
        "--samples",
        "300",
        "--val-n",
        "100",
        "--device",
        "cpu",
    ]
    subprocess.run(_single(args + ["--out", str(tmp_path / "one")]), env=_env(), check=True, capture_output=True)
    run = subprocess.run(_torchrun(args + ["--out", str(tmp_path / "two")]), env=_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 processes" in run.stdout and run.stdout.count("training toy_mlp") == 1  # rank 0 alone prints
    one, meta_one = load_checkpoint(tmp_path / "one" / "model.pt")
    two, meta_two = load_checkpoint(tmp_path / "two" / "model.pt")
    assert meta_two["arch"] == "toy_mlp" and meta_two["training"] == "standard"
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-4), name
    assert (tmp_path / "two" / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs, written once
    assert (tmp_path / "two" / "validation.json").is_file()


def _worker_pid(parent: int, rank: int) -> int | None:
    """The torchrun worker process of ``rank`` (a child of the torchrun agent ``parent``), if running."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry)
    return None


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank's process in /proc")
def test_sharded_evaluation_merges_to_the_single_process_report_even_after_a_rank_dies(standard_model, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "model.pt", standard_model, dataset="mnist5k")
    config = write_eval_config(tmp_path / "eval.toml", pgd=(5, 0.03), adaptive=(30, 0.01))
    args = [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--config",
        str(config),
        "--samples",
        "20",
        "--device",
        "cpu",
        "--checks",
        "0",
    ]
    subprocess.run(_single(args + ["--out", str(tmp_path / "one")]), env=_env(), check=True, capture_output=True)
    one = _records(tmp_path / "one" / "records.jsonl")

    run = subprocess.run(_torchrun(args + ["--out", str(tmp_path / "two")]), env=_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert _records(tmp_path / "two" / "records.jsonl") == one  # merged, in sample order, equal sample by sample
    assert not list((tmp_path / "two").glob("records.rank*"))
    results = {d: json.loads((tmp_path / d / "results.json").read_text())["accuracy"] for d in ("one", "two")}
    assert results["one"] == results["two"]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _torchrun(args + ["--out", str(killed)]), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    shard = killed / "records.rank1.jsonl"
    while proc.poll() is None and (not shard.exists() or len(shard.read_text().splitlines()) < 2):
        time.sleep(0.01)  # until rank 1 has written a record (or the job ended, which the asserts below catch)
    pid = _worker_pid(proc.pid, rank=1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert proc.wait() != 0  # torchrun stops the job when a rank dies
    partial = sum(len(_records(p)) for p in killed.glob("records*.jsonl"))
    assert 0 < partial < 20, "the job was killed part-way"
    run = subprocess.run(_torchrun(args + ["--out", str(killed)]), env=_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "resuming" in run.stdout
    assert _records(killed / "records.jsonl") == one


def test_sweep_under_torchrun_equals_the_single_process_sweep(standard_model, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "model.pt", standard_model, dataset="mnist5k")
    config = write_eval_config(tmp_path / "eval.toml", pgd=(3, 0.05), adaptive=(3, 0.05))
    args = [
        "reproduce",
        "sweep",
        "--param",
        "lam",
        "--values",
        "0.05,0.2",
        "--checkpoint",
        str(checkpoint),
        "--config",
        str(config),
        "--samples",
        "8",
        "--device",
        "cpu",
    ]
    subprocess.run(_single(args + ["--out", str(tmp_path / "one")]), env=_env(), check=True, capture_output=True)
    run = subprocess.run(_torchrun(args + ["--out", str(tmp_path / "two")]), env=_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("sweep over lam") == 1 and "2 processes" in run.stdout  # rank 0 alone prints

    def accuracies(folder: str) -> list[dict]:
        rows = json.loads((tmp_path / folder / "sweep_lam.json").read_text())["rows"]
        return [{k: v for k, v in row.items() if "/" in k or k == "value"} for row in rows]

    assert accuracies("two") == accuracies("one")
    for value in ("0.05", "0.2"):
        assert _records(tmp_path / "two" / f"lam={value}" / "records.jsonl") == _records(
            tmp_path / "one" / f"lam={value}" / "records.jsonl"
        )
