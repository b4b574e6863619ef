"""Shared fixtures: tiny seeded models, the embedded MNIST subset, and the optional shared data folder."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import advpnml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ADVPNML_SHARED_DATA", REPO.parent / "shared" / "data"))


class CallCounter(nn.Module):
    """Wraps a model and records the batch size of every call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(x.shape[0])
        return self.model(x)


@pytest.fixture
def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return advpnml.create_model("madry_cnn", width=0.125).eval()


@pytest.fixture
def tiny_mlp() -> nn.Module:
    """A 4-class MLP on 6-D inputs in [0, 1], float64 so batched and looped computations agree to 1e-12."""
    torch.manual_seed(0)
    return (
        nn.Sequential(nn.Flatten(), nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).double().eval()
    )


@pytest.fixture(scope="session")
def mnist5k_test():
    return advpnml.load_dataset("mnist5k", "test")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def standard_model() -> nn.Module:
    """A small Madry CNN trained normally for 2 epochs on the embedded MNIST subset (~90% clean, seconds on CPU)."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    data = advpnml.load_dataset("mnist5k", "train")
    model = advpnml.create_model("madry_cnn", width=0.25)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(2):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), 50):
            b = order[i : i + 50]
            loss = F.cross_entropy(model(data.x[b]), data.y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory) -> Path:
    """A ``--data-dir`` holding two CIFAR-10-format test images (a pickled batch, as the dataset is published)."""
    import pickle

    import numpy as np

    root = tmp_path_factory.mktemp("cifar10")
    (root / "cifar-10-batches-py").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3072), dtype=np.uint8)
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": pixels, "labels": [3, 8]}, f)
    return root


def write_eval_config(path: Path, pgd: tuple[int, float], adaptive: tuple[int, float]) -> Path:
    """A small evaluation preset for command-line tests: PGD transferred and the adaptive attack, (steps, step size) each."""
    path.write_text(
        'dataset = "mnist5k"\n[defense]\nrefine_eps = 0.1\n[evaluation]\neps = 0.1\nbatch_size = 2\n'
        f'[[evaluation.attacks]]\ncolumn = "PGD"\nattack = "pgd"\nparams = {{ steps = {pgd[0]}, step_size = {pgd[1]} }}\n'
        'defense = "transfer"\n'
        f'[[evaluation.attacks]]\ncolumn = "Adaptive"\nattack = "pgd"\nparams = {{ steps = {adaptive[0]}, step_size = {adaptive[1]} }}\n'
        "base = false\n"
    )
    return path


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="session")
def robust_model() -> nn.Module:
    """A small Madry CNN PGD-trained for 2 epochs at eps 0.3 on the embedded subset (seconds on CPU)."""
    from advpnml.runtime import QUIET
    from advpnml.training.trainer import TrainConfig, train

    config = TrainConfig(
        arch="madry_cnn",
        arch_kwargs={"width": 0.25},
        method="pgd",
        epochs=2,
        batch_size=50,
        optimizer="adam",
        lr=2e-3,
        weight_decay=0.0,
        eps=0.3,
        attack_steps=5,
        attack_step_size=0.1,
        eps_warmup_epochs=1,
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model, _ = train(
            config, advpnml.load_dataset("mnist5k", "train"), tmp, runtime=replace(QUIET, memory_format="contiguous")
        )
    return model.eval()
