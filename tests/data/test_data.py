"""Dataset loaders: the embedded MNIST subset, toy 2-D data, IDX / CIFAR pickle readers, clear errors."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from advpnml.data import DataFileError, load_dataset


def test_mnist5k_is_a_fixed_balanced_partition():
    train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert train.x.shape[1:] == (1, 28, 28) and train.x.dtype == torch.float32
    assert float(train.x.min()) >= 0.0 and float(train.x.max()) == 1.0
    assert torch.bincount(test.y).tolist() == [100] * 10
    assert len(set(test.y[:50].tolist())) >= 8, "splits are shuffled so a prefix mixes classes"
    train_rows = {bytes(row) for row in (train.x.view(4000, -1) * 255).round().byte().numpy()}
    assert not any(bytes(row) in train_rows for row in (test.x.view(1000, -1) * 255).round().byte().numpy()[:200])
    again = load_dataset("mnist5k", "test", n=10)
    torch.testing.assert_close(again.x, test.x[:10])


def test_toy2d_follows_the_paper():
    data = load_dataset("toy2d", "train")
    radius = data.x.norm(dim=1)
    assert radius[data.y == 0].mean() < 0.2
    assert radius[data.y == 1].mean() == pytest.approx(2.0, abs=0.05)
    assert data.info.bounds is None
    assert not torch.equal(load_dataset("toy2d", "test").x, data.x)


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_files_in_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28))
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([3, 1, 4, 1, 5]))
    data = load_dataset("mnist", "test", data_dir=tmp_path)
    assert data.x.shape == (5, 1, 28, 28) and data.y.tolist() == [3, 1, 4, 1, 5]
    torch.testing.assert_close(data.x[2, 0], torch.from_numpy(images[2]).float() / 255)


def test_cifar10_pickles(tmp_path):
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    data = np.random.default_rng(0).integers(0, 256, size=(4, 3072), dtype=np.uint8)
    with open(batches / "test_batch", "wb") as f:
        pickle.dump({"data": data, "labels": [0, 9, 2, 3]}, f)
    ds = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert ds.x.shape == (4, 3, 32, 32) and ds.y.tolist() == [0, 9, 2, 3]
    torch.testing.assert_close(ds.x[1, 2, 0, :4], torch.from_numpy(data[1, 2048:2052]).float() / 255)


def test_an_empty_cifar10_batch_is_one_line(tmp_path):
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    with open(batches / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((0, 3072), np.uint8), "labels": []}, f)
    with pytest.raises(DataFileError, match=r"test_batch holds no images \(a CIFAR-10 batch of 0 samples\)"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_missing_files_name_the_expected_path(tmp_path):
    with pytest.raises(DataFileError, match="t10k-images-idx3-ubyte.gz not found under"):
        load_dataset("mnist", "test", data_dir=tmp_path)
    with pytest.raises(DataFileError, match=r"cifar-10-batches-py/test_batch"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    with pytest.raises(DataFileError, match="needs --data-dir"):
        load_dataset("cifar10", "test")


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        load_dataset("mnist5k", "valid")


def test_shared_full_mnist_and_cifar10(shared_data):
    if not (shared_data / "mnist").is_dir():
        pytest.skip("no full MNIST in the shared folder")
    mnist = load_dataset("mnist", "test", data_dir=shared_data / "mnist")
    assert len(mnist) == 10000 and torch.bincount(mnist.y).sum() == 10000
    assert mnist.x.mean().item() == pytest.approx(0.1325, abs=0.002)
    cifar = load_dataset("cifar10", "test", data_dir=shared_data / "cifar10")
    assert len(cifar) == 10000 and torch.bincount(cifar.y).tolist() == [1000] * 10


class _Payload:
    """A pickle that runs code when loaded: it creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar10_batch_is_refused_unrun(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "ran"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": _Payload(marker), "labels": [0]}, f)
    with pytest.raises(DataFileError, match="refused unread"):
        load_dataset("cifar10", "test", tmp_path)
    assert not marker.exists(), "the payload ran"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 5), dtype=np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(DataFileError, match=r"expected \(N, 3072\)"):
        load_dataset("cifar10", "test", tmp_path)
    (folder / "test_batch").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DataFileError, match="not a readable CIFAR-10 batch"):
        load_dataset("cifar10", "test", tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not gzip at all", "cannot be read"),
        (None, "cannot be read|truncated|past its declared size"),
        (b"\x00\x00\x08\x07", "not an unsigned-byte IDX file"),
    ],
)
def test_bad_idx_files_are_one_line(tmp_path, content, message):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    path = raw / "t10k-images-idx3-ubyte.gz"
    if content is None:  # a gzip stream cut short
        path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 400)[:30])
    else:
        path.write_bytes(content if content.startswith(b"not") else gzip.compress(content))
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00"))
    with pytest.raises(DataFileError, match=message):
        load_dataset("mnist", "test", tmp_path)


def _cifar_batch(tmp_path, batch, protocol: int = pickle.HIGHEST_PROTOCOL):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    return folder / "test_batch"


def test_labels_out_of_range_are_one_line_naming_the_file(tmp_path):
    path = _cifar_batch(tmp_path, {"data": np.zeros((3, 3072), dtype=np.uint8), "labels": [0, 10, 2]})
    with pytest.raises(
        DataFileError, match=rf"{path}: labels in \[0, 10\], expected 0..9 for cifar10 \(1 out of range, the first at sample 1\)"
    ):
        load_dataset("cifar10", "test", tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([1, 12, 3]))
    with pytest.raises(DataFileError, match=r"t10k-labels-idx1-ubyte.gz: labels in \[1, 12\], expected 0..9 for mnist"):
        load_dataset("mnist", "test", tmp_path)
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([1, 2]))
    with pytest.raises(DataFileError, match="holds 3 images but .* 2 labels"):
        load_dataset("mnist", "test", tmp_path)


def test_a_cifar10_batch_of_floats_is_refused_not_read_as_zeros(tmp_path):
    _cifar_batch(tmp_path, {"data": np.random.default_rng(0).random((2, 3072)), "labels": [0, 1]})
    with pytest.raises(DataFileError, match=r"'data' holds float64 values in \[.*\]; a CIFAR-10 batch holds uint8 pixels 0-255"):
        load_dataset("cifar10", "test", tmp_path)


def test_a_valid_batch_pickled_at_protocol_2_is_read(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, size=(3, 3072), dtype=np.uint8)
    _cifar_batch(tmp_path, {"data": data, "labels": [4, 5, 6], "batch_label": "testing batch 1 of 1"}, protocol=2)
    ds = load_dataset("cifar10", "test", tmp_path)
    assert ds.y.tolist() == [4, 5, 6]
    torch.testing.assert_close(ds.x.view(3, -1), torch.from_numpy(data).float() / 255)


class _Huge:
    """An array "of 1 TiB" in a pickle of about 200 bytes: numpy would allocate it while unpickling."""

    def __reduce__(self):
        return (np.ndarray.__reduce__(np.zeros(1, np.uint8))[0], (np.ndarray, (1 << 40,), b"b"))


def test_a_batch_claiming_more_than_it_holds_is_refused_before_allocating(tmp_path):
    path = _cifar_batch(tmp_path, {"data": _Huge(), "labels": [0]})
    assert path.stat().st_size < 300
    with pytest.raises(DataFileError, match=r"claims an array of 1,099,511,627,776 bytes in a file of .* \(refused unread\)"):
        load_dataset("cifar10", "test", tmp_path)


def test_a_memo_bomb_is_refused_before_it_expands(tmp_path):
    level = [0] * 10
    for _ in range(9):  # 10**10 labels by reference, a few hundred bytes on disk; np.asarray would build them all
        level = [level] * 10
    path = _cifar_batch(tmp_path, {"data": np.zeros((1, 3072), dtype=np.uint8), "labels": level})
    assert path.stat().st_size < 3072 + 500, "one image and a few hundred bytes of labels"
    with pytest.raises(DataFileError, match="'labels' must be a list of whole numbers"):
        load_dataset("cifar10", "test", tmp_path)


def test_an_idx_header_claiming_too_much_is_refused_unread(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(struct.pack(">HBB3I", 0, 8, 3, 1 << 20, 1 << 10, 1 << 10)))
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([1]))
    with pytest.raises(DataFileError, match="declares .* values, more than any MNIST file"):
        load_dataset("mnist", "test", tmp_path)


def test_predict_refuses_out_of_range_labels_instead_of_a_wrong_accuracy(standard_model, tmp_path, capsys):
    from advpnml.cli import main
    from advpnml.models import save_checkpoint

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 10, 3]))
    checkpoint = save_checkpoint(tmp_path / "m.pt", standard_model, dataset="mnist")
    assert (
        main(["predict", "--checkpoint", str(checkpoint), "--data", "mnist", "--data-dir", str(tmp_path), "--config", "mnist"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "labels in [1, 10], expected 0..9" in err
    assert main(["info", "--data-dir", str(tmp_path)]) == 0
    assert "mnist     not available:" in capsys.readouterr().out, "info no longer reports the file as found"
