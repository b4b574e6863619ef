"""Every architecture in the registry and every external source, through the user's path: a checkpoint file, loaded,
hashed into a records header, evaluated with ``--out``, reported, then resumed under the other memory format.

The identity hash once crashed on every BatchNorm model (a 0-dim ``num_batches_tracked`` buffer) and on a
channels-last 1x1 convolution, and no test evaluated those architectures with ``--out``. A newly registered
architecture or source without an entry in the tables below fails here, so none can be skipped silently.
"""

from __future__ import annotations

import json

import pytest
import torch

from advpnml.cli import main
from advpnml.models import EXTERNAL_SOURCES, create_model, list_models, save_checkpoint
from advpnml.models.external import default_checkpoint

#: the preset (and so the dataset) each architecture evaluates on
ARCH_DATA = {
    "madry_cnn": "mnist5k",
    "lenet5": "mnist5k",
    "official_mnist_cnn": "mnist5k",
    "convex_small": "cifar10",
    "preact_resnet18": "cifar10",
    "resnet18_cifar": "cifar10",
    "resnet4b": "cifar10",
    "wide_resnet": "cifar10",
    "toy_mlp": "toy2d",
    "resnet50": "imagenet",
}
#: each external source's preset, and the real file in ``../shared/data/weights`` where one ships
SOURCE_DATA = {
    "carmon2019": ("cifar10", None),
    "wong2020_imagenet": ("imagenet", None),
    "advertorch_lenet5": ("mnist5k", "advertorch_mnist_lenet5/mnist_lenet5_advtrained.pt"),
    "abcrown_resnet4b": ("cifar10", "abcrown_cifar10_resnet4b/resnet4b.pth"),
    "convex_small": ("cifar10", "convex_cifar10_small_8px/cifar_small_8px.pth"),
    "autoattack_resnet18": ("cifar10", None),
}
FORMATS = ("contiguous", "channels_last")


def test_the_tables_cover_the_registry_and_every_source():
    assert set(ARCH_DATA) == set(list_models()), "give every registered architecture a dataset here"
    assert set(SOURCE_DATA) == set(EXTERNAL_SOURCES), "give every external source a dataset here"


def _needs(dataset: str) -> None:
    if dataset == "imagenet":
        pytest.importorskip("torchvision", reason="the ImageNet models need torchvision (advpnml[imagenet])")


def _evaluate_and_resume(argv: list[str], out, capsys) -> None:
    """Evaluate fresh in one memory format, then rerun in the other into the same folder: it must resume."""
    common = [
        *argv,
        "--samples",
        "2",
        "--attacks",
        "PGD",
        "--set",
        "PGD.steps=1",
        "--checks",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main([*common, "--memory-format", FORMATS[0]]) == 0, capsys.readouterr().err
    records = (out / "records.jsonl").read_text().splitlines()
    header = json.loads(records[0])
    assert len(records) == 3 and {"model_sha256", "outputs", "architecture"} <= set(header["identity"])
    assert set(json.loads((out / "results.json").read_text())["summary"]) >= {"base", "defense"}
    capsys.readouterr()
    assert main([*common, "--memory-format", FORMATS[1]]) == 0, capsys.readouterr().err
    assert "resuming: 2 samples" in capsys.readouterr().out, "the same model in another layout is the same run"
    assert (out / "records.jsonl").read_text().splitlines() == records


@pytest.mark.parametrize("arch", sorted(ARCH_DATA))
def test_every_architecture_evaluates_with_out_in_both_memory_formats(arch, cifar10_dir, tmp_path, capsys):
    dataset = ARCH_DATA[arch]
    _needs(dataset)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "model.pt", create_model(arch), dataset=dataset)
    _evaluate_and_resume(
        ["evaluate", "--checkpoint", str(checkpoint), "--config", dataset, "--data-dir", str(cifar10_dir)],
        tmp_path / "out",
        capsys,
    )


@pytest.mark.parametrize("source", sorted(SOURCE_DATA))
def test_every_external_source_evaluates_with_out_in_both_memory_formats(source, cifar10_dir, tmp_path, capsys, request):
    from tests.conftest import SHARED_DATA

    dataset, shipped = SOURCE_DATA[source]
    _needs(dataset)
    argv = ["evaluate", "--source", source, "--config", dataset, "--data-dir", str(cifar10_dir)]
    if source == "autoattack_resnet18":
        default_checkpoint(source)  # ships inside the installed pyautoattack: no --checkpoint
    elif shipped and (SHARED_DATA / "weights" / shipped).is_file():
        argv += ["--checkpoint", str(SHARED_DATA / "weights" / shipped)]  # the real file
    else:  # random weights in the layout the source's files have
        spec = EXTERNAL_SOURCES[source]
        torch.manual_seed(0)
        state = create_model(spec.arch, **spec.kwargs).state_dict()
        path = tmp_path / "external.pt"
        torch.save({"state_dict": [state]} if source == "convex_small" else state, path)
        argv += ["--checkpoint", str(path)]
    _evaluate_and_resume(argv, tmp_path / "out", capsys)
