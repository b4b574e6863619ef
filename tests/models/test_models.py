"""Architectures, normalization, checkpoints and the external-checkpoint adapters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import advpnml
from advpnml.data import load_dataset
from advpnml.models import CheckpointError, Normalize, create_model, list_models, load_checkpoint, load_external, save_checkpoint


@pytest.mark.parametrize(
    "name, kwargs, shape, classes",
    [
        ("madry_cnn", {}, (2, 1, 28, 28), 10),
        ("lenet5", {}, (2, 1, 28, 28), 10),
        ("wide_resnet", {"depth": 10, "widen_factor": 1}, (2, 3, 32, 32), 10),
        ("preact_resnet18", {"width": 8}, (2, 3, 32, 32), 10),
        ("toy_mlp", {}, (2, 2), 2),
    ],
)
def test_architectures_return_logits(name, kwargs, shape, classes):
    model = create_model(name, **kwargs).eval()
    out = model(torch.rand(shape))
    assert out.shape == (shape[0], classes) and torch.isfinite(out).all()


def test_wide_resnet_default_is_28_10():
    model = create_model("wide_resnet")
    assert len(model.block1.layer) == 4 and model.fc.in_features == 640
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(36.5e6, rel=0.01)


def test_madry_cnn_has_the_papers_shape():
    model = create_model("madry_cnn")
    assert (model.conv1.out_channels, model.conv2.out_channels, model.fc1.out_features) == (32, 64, 1024)
    assert model.conv1.kernel_size == (5, 5)


def test_normalization_is_the_first_layer():
    model = create_model("preact_resnet18", width=8).eval()
    x = torch.rand(2, 3, 32, 32)
    plain = create_model("preact_resnet18", width=8, mean=None, std=None).eval()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x), plain((x - model.normalize.mean) / model.normalize.std))
    with pytest.raises(ValueError, match="std"):
        Normalize((0.5,), (0.0,))


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown architecture 'resnet9000'.*madry_cnn"):
        create_model("resnet9000")
    assert "wide_resnet" in list_models()


def test_checkpoint_round_trip_with_metadata(tmp_path):
    model = create_model("madry_cnn", width=0.25, mean=(0.1307,), std=(0.3081,))
    path = save_checkpoint(
        tmp_path / "m.pt", model, dataset="mnist5k", training="pgd", eps=0.3, classes=[str(i) for i in range(10)]
    )
    loaded, meta = load_checkpoint(path)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert meta["arch"] == "madry_cnn" and meta["training"] == "pgd" and meta["eps"] == 0.3
    assert meta["normalization"] == {"mean": [0.1307], "std": [0.3081]} and meta["dataset"] == "mnist5k"
    assert not loaded.training


def test_checkpoint_into_wrong_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "lenet.pt"
    torch.save(create_model("lenet5").state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit architecture 'madry_cnn'.*missing keys: fc1"):
        load_external(path, "madry_cnn")
    with pytest.raises(CheckpointError, match="not an advpnml checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


class _Pickled:
    """An arbitrary class: unpickling it would run code the user did not ask for."""


def test_checkpoint_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"meta": _Pickled()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_carmon_style_wrn_state_dict_loads(tmp_path):
    """DataParallel prefixes, a {'state_dict': ...} wrapper and the unused sub_block1 of Carmon et al."""
    source = create_model("wide_resnet", depth=10, widen_factor=1, mean=None, std=None).eval()
    sd = {"module." + k: v for k, v in source.state_dict().items()}
    sd.update({"module.sub_block1.layer.0.conv1.weight": torch.zeros(16, 16, 3, 3)})
    torch.save({"state_dict": sd, "epoch": 200}, tmp_path / "carmon.pt")
    model = load_external(tmp_path / "carmon.pt", "carmon2019", depth=10, widen_factor=1)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model(x), source(x))


def test_wong_resnet50_adapter_keeps_first_100_logits(tmp_path):
    pytest.importorskip("torchvision")
    from torchvision.models import resnet50

    net = resnet50(weights=None).eval()
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, tmp_path / "wong.pt")
    model = load_external(tmp_path / "wong.pt", "wong2020_imagenet")
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), net((x - mean) / std)[:, :100])


def test_advertorch_robust_lenet5_reproduces_its_clean_accuracy(shared_data):
    weights = shared_data / "weights" / "advertorch_mnist_lenet5" / "mnist_lenet5_advtrained.pt"
    if not weights.is_file() or not (shared_data / "mnist").is_dir():
        pytest.skip("advertorch checkpoint or full MNIST not in the shared data folder")
    model = load_external(weights, "advertorch_lenet5")
    data = load_dataset("mnist", "test", data_dir=shared_data / "mnist", n=1000)
    with torch.no_grad():
        accuracy = (model(data.x).argmax(1) == data.y).float().mean().item()
    assert accuracy == pytest.approx(0.982, abs=0.005), "the shared README measured 98.2% on the first 1,000 test images"


def test_defense_wraps_a_loaded_checkpoint(tmp_path):
    model = create_model("madry_cnn", width=0.25)
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model))
    log_q = advpnml.AdversarialPnml(loaded, 0.1)(torch.rand(2, 1, 28, 28))
    torch.testing.assert_close(log_q.exp().sum(1), torch.ones(2))


def test_cifar_architectures_and_official_mnist_cnn_shapes():
    for name, shape in (
        ("resnet4b", (2, 3, 32, 32)),
        ("convex_small", (2, 3, 32, 32)),
        ("resnet18_cifar", (2, 3, 32, 32)),
        ("official_mnist_cnn", (2, 1, 28, 28)),
    ):
        out = create_model(name, **({"width": 8} if name == "resnet18_cifar" else {})).eval()(torch.rand(shape))
        assert out.shape == (2, 10) and torch.isfinite(out).all(), name
    official = create_model("official_mnist_cnn")
    assert sum(p.numel() for p in official.parameters()) == 62346, "conv 5x5 (32) -> conv 5x5 (64) -> FC 1024 -> 10"
    assert official.normalize.mean_values == (0.1307,), "the official code feeds MNIST-standardized inputs"


def test_convex_cascade_checkpoint_takes_its_first_model(tmp_path):
    """convex_adversarial stores a LIST of cascade models under state_dict, in nn.Sequential numbering."""
    first = create_model("convex_small", mean=None, std=None).eval()
    second = create_model("convex_small", mean=None, std=None).eval()
    strip = lambda m: {k[len("layers.") :]: v for k, v in m.state_dict().items()}  # noqa: E731
    torch.save({"state_dict": [strip(first), strip(second)], "epoch": 3}, tmp_path / "cascade.pth")
    model = load_external(tmp_path / "cascade.pth", "convex_small")
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), 0.225
    torch.testing.assert_close(model(x), first((x - mean) / std))


def test_autoattack_source_without_its_package_names_the_extra(monkeypatch):
    import advpnml.models.external as external

    monkeypatch.setattr(external.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match=r"advpnml\[autoattack\]"):
        load_external(None, "autoattack_resnet18")


@pytest.mark.parametrize(
    "source, folder, file, clean",
    [
        ("abcrown_resnet4b", "abcrown_cifar10_resnet4b", "resnet4b.pth", 0.771),
        ("convex_small", "convex_cifar10_small_8px", "cifar_small_8px.pth", 0.312),
    ],
)
def test_shared_cifar10_checkpoints_reproduce_their_clean_accuracy(shared_data, source, folder, file, clean):
    weights = shared_data / "weights" / folder / file
    if not weights.is_file() or not (shared_data / "cifar10").is_dir():
        pytest.skip(f"{folder} or the CIFAR-10 test set not in the shared data folder")
    model = load_external(weights, source)
    data = load_dataset("cifar10", "test", data_dir=shared_data / "cifar10", n=1000)
    with torch.no_grad():
        accuracy = (model(data.x).argmax(1) == data.y).float().mean().item()
    assert accuracy == pytest.approx(clean, abs=0.005), "the shared README's measurement on the first 1,000 test images"


def test_autoattack_example_resnet18_is_the_accurate_control(shared_data):
    pytest.importorskip("pyautoattack")
    if not (shared_data / "cifar10").is_dir():
        pytest.skip("CIFAR-10 test set not in the shared data folder")
    model = load_external(None, "autoattack_resnet18")
    data = load_dataset("cifar10", "test", data_dir=shared_data / "cifar10", n=200)
    with torch.no_grad():
        accuracy = (model(data.x).argmax(1) == data.y).float().mean().item()
    assert accuracy > 0.9, f"AutoAttack's example model is 94.6% accurate on the first 500 images, got {accuracy:.1%}"


def test_a_checkpoint_without_weights_or_with_nan_weights_is_one_line(tmp_path):
    import torch

    model = create_model("madry_cnn", width=0.125)
    path = save_checkpoint(tmp_path / "m.pt", model, dataset="mnist5k")
    payload = torch.load(path, weights_only=True)
    torch.save({"meta": payload["meta"]}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="no weights"):
        load_checkpoint(tmp_path / "empty.pt")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.pt", model, dataset="mnist5k")
    with pytest.raises(CheckpointError, match="NaN or inf weights"):
        load_checkpoint(tmp_path / "nan.pt")


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(tmp_path, monkeypatch):
    import errno

    import torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(tmp_path / "m.pt", create_model("madry_cnn", width=0.125))
    assert list(tmp_path.iterdir()) == []


def test_torch_saves_runtime_error_on_a_full_disk_is_one_line_and_leaves_no_tmp(tmp_path, monkeypatch):
    import torch

    def half_written(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/3: "
            "file write failed\nmore lines of C++ context"
        )

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(
        CheckpointError, match=r"cannot write checkpoint .*m.pt: .*PytorchStreamWriter failed writing file"
    ) as err:
        save_checkpoint(tmp_path / "m.pt", create_model("madry_cnn", width=0.125))
    assert "\n" not in str(err.value) and list(tmp_path.iterdir()) == [], "no half-written last.pt.tmp is left"


def _saved(tmp_path, edit):
    import torch

    path = save_checkpoint(tmp_path / "m.pt", create_model("madry_cnn", width=0.125), dataset="mnist5k")
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda p: p["state_dict"].__setitem__("conv1.weight", p["state_dict"]["conv1.weight"].long()),
            r"integer values where 'madry_cnn' has floating weights: conv1.weight \(torch.int64, the model's is torch.float32\)",
        ),
        (lambda p: p["meta"].__setitem__("kwargs", [1, 2]), r"metadata 'kwargs' must be dict, got list"),
        (lambda p: p["meta"].__setitem__("arch", ["madry_cnn"]), r"metadata 'arch' must be str, got list"),
        (lambda p: p["meta"].__setitem__("dataset", ["mnist5k"]), r"metadata 'dataset' must be str or None, got list"),
        (
            lambda p: p["state_dict"].__setitem__("conv1.bias", "not a tensor"),
            r"entries that are not tensors: conv1.bias \(str\)",
        ),
    ],
)
def test_a_checkpoint_with_wrong_types_is_one_line(tmp_path, edit, message):
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(_saved(tmp_path, edit))
