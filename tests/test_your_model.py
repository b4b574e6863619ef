"""A model class the project has never seen, a plain state dict and an .npz: through ``advpnml evaluate --model`` and
``advpnml.evaluate(...)`` to the same numbers; every bad input one line before any attack."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import advpnml
from advpnml.cli import main

MODEL_FILE = textwrap.dedent('''
    import torch
    import torch.nn as nn


    class TinyNet(nn.Module):
        """Nothing advpnml knows: a user's own small CNN for 28x28 grayscale digits."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.head = nn.Linear(8 * 14 * 14, 10)

        def forward(self, x):
            return self.head(self.features(x).flatten(1))


    def not_a_model():
        return 3


    class Squeezed(TinyNet):
        """The same weights, logits of shape (N, 10, 1): not what a classifier returns."""

        def forward(self, x):
            return super().forward(x).unsqueeze(-1)
''')
#: a few cheap columns of the strong suite (transfer, adaptive, APGD through the defense, score-based black box)
COLUMNS = "FGSM,PGD,Adaptive-margin,APGD-T adaptive,Square"
SETS = {
    "PGD.steps": 5,
    "Adaptive-margin.steps": 5,
    "APGD-T adaptive.steps": 5,
    "APGD-T adaptive.n_targets": 2,
    "Square.max_queries": 30,
}


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """The user's file, a trained plain state dict of its class, and an .npz of uint8 test images."""
    root = tmp_path_factory.mktemp("user")
    (root / "mynet.py").write_text(MODEL_FILE)
    namespace: dict = {}
    exec(compile(MODEL_FILE, "mynet.py", "exec"), namespace)
    torch.manual_seed(0)
    model = namespace["TinyNet"]()
    train = advpnml.load_dataset("mnist5k", "train")
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for i in range(0, 2000, 50):
        loss = F.cross_entropy(model(train.x[i : i + 50]), train.y[i : i + 50])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(model.state_dict(), root / "my.pt")
    test = advpnml.load_dataset("mnist5k", "test", n=6)
    np.savez(root / "digits.npz", x=(test.x * 255).round().byte().numpy(), y=test.y.numpy())
    return root, namespace["TinyNet"]


def _cli(root, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--model",
        f"{root / 'mynet.py'}:TinyNet",
        "--checkpoint",
        str(root / "my.pt"),
        "--data",
        str(root / "digits.npz"),
        "--eps",
        "0.1",
        "--lam",
        "0.1",
        "--suite",
        "strong",
        "--attacks",
        COLUMNS,
        *[f"--set={k}={v}" for k, v in SETS.items()],
        "--checks",
        "4",
        "--batch-size",
        "3",
        "--device",
        "cpu",
        *extra,
    ]


def test_the_command_line_and_the_python_call_give_the_same_numbers(user_files, tmp_path, capsys):
    root, tiny_net = user_files
    assert main([*_cli(root), "--out", str(tmp_path / "cli")]) == 0, capsys.readouterr().err
    model = tiny_net()
    model.load_state_dict(torch.load(root / "my.pt", weights_only=True))
    data = np.load(root / "digits.npz")
    found = advpnml.evaluate(
        model,
        (data["x"], data["y"]),
        eps=0.1,
        lam=0.1,
        suite="strong",
        attacks=COLUMNS.split(","),
        set=SETS,
        checks=4,
        batch_size=3,
        device="cpu",
        out=tmp_path / "python",
        verbose=False,
    )
    cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    python = json.loads((tmp_path / "python" / "results.json").read_text())
    assert cli["accuracy"] == python["accuracy"] == found.accuracy()
    assert cli["summary"] == python["summary"] == found.summary()
    records = [json.loads(line) for line in (tmp_path / "cli" / "records.jsonl").read_text().splitlines()[1:]]
    assert [r["pred"] for r in records] == [r["pred"] for r in found.records]
    assert found.accuracy()["base"]["Natural"] > 0 and found.summary()["defense"]["adaptive"] is not None
    assert "| Adversarial pNML |" in found.markdown() and len(found.checks) > 4
    assert torch.equal(
        found.robust("base"),
        torch.tensor(
            [
                r["pred"]["base"]["Natural"] == r["label"] and all(p == r["label"] for p in r["pred"]["base"].values())
                for r in records
            ]
        ),
    )


def test_nothing_is_written_without_out(user_files, tmp_path, monkeypatch):
    root, tiny_net = user_files
    monkeypatch.chdir(tmp_path)
    data = np.load(root / "digits.npz")
    found = advpnml.evaluate(
        tiny_net(), (data["x"], data["y"]), eps=0.1, lam=0.1, suite="paper", attacks=["FGSM"], checks=0, verbose=False
    )
    assert set(found.summary()) == {"base", "defense"} and found.out is None and list(tmp_path.iterdir()) == []


def test_a_normalizing_model_wrapped_with_normalize_equals_normalization_inside(standard_model, mnist5k_test):
    inside = advpnml.create_model("madry_cnn", width=0.25, mean=(0.5,), std=(0.25,)).eval()
    inside.load_state_dict(standard_model.state_dict())
    x, y = mnist5k_test.x[:4], mnist5k_test.y[:4]
    kwargs = dict(
        eps=0.1, lam=0.1, attacks=["FGSM", "Adaptive-margin"], set={"Adaptive-margin.steps": 3}, checks=0, verbose=False
    )
    wrapped = advpnml.evaluate(standard_model, (x, y), normalize=((0.5,), (0.25,)), **kwargs)
    assert wrapped.records == advpnml.evaluate(inside, (x, y), **kwargs).records


def _write(tmp_path, name, **arrays):
    np.savez(tmp_path / name, **arrays)
    return str(tmp_path / name)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r, t: ["--model", str(t / "nope.py") + ":TinyNet"], "model file not found: .*nope.py"),
        (lambda r, t: ["--model", f"{r / 'mynet.py'}:TinyNett"], "has no 'TinyNett'; it defines: Squeezed, TinyNet, not_a_model"),
        (lambda r, t: ["--model", "no_such_package.models:Net"], "cannot import no_such_package.models: No module named"),
        (lambda r, t: ["--model", f"{r / 'mynet.py'}:not_a_model"], r"not_a_model\(\) returned a int, not a torch.nn.Module"),
        (
            lambda r, t: ["--model", f"{r / 'mynet.py'}:Squeezed"],
            r"must return floating logits of shape \(N, classes\); for one "
            r"input it returned \(1, 10, 1\)",
        ),
        (lambda r, t: ["--checkpoint", _saved_other(t)], r"does not fit architecture 'TinyNet': missing keys: .*head.weight"),
        (
            lambda r, t: ["--data", _write(t, "big.npz", x=np.full((3, 1, 28, 28), 2.0), y=np.zeros(3))],
            r"big.npz: inputs in \[2, 2\], expected inside \[0, 1\]",
        ),
        (
            lambda r, t: ["--data", _write(t, "flat.npz", x=np.zeros((3, 28, 28), np.uint8), y=np.zeros(3))],
            r"x must be \(N, C, H, W\) images, got shape \(3, 28, 28\) \(add a channel axis",
        ),
        (
            lambda r, t: ["--data", _write(t, "labels.npz", x=np.zeros((3, 1, 28, 28), np.uint8), y=np.array([0, 12, 3]))],
            r"the model returns 10 logits per input but labels has 13 classes",
        ),
        (
            lambda r, t: ["--data", _write(t, "short.npz", x=np.zeros((3, 1, 28, 28), np.uint8), y=np.array([0, 1]))],
            r"x holds 3 samples but y 2 labels",
        ),
        (
            lambda r, t: ["--data", _write(t, "nox.npz", images=np.zeros((3, 1, 28, 28)), y=np.zeros(3))],
            r"must hold arrays 'x' \(N, C, H, W\) and 'y' \(N,\), found: images, y",
        ),
        (lambda r, t: ["--data", str(t / "typo")], "data '.*typo' is neither a dataset name"),
        (
            lambda r, t: ["--data", _write(t, "empty.npz", x=np.zeros((0, 1, 28, 28), np.uint8), y=np.zeros(0, int))],
            r"empty.npz: x and y hold no samples",
        ),
        (
            lambda r, t: ["--data", _write(t, "words.npz", x=np.zeros((2, 1, 28, 28), np.uint8), y=np.array(["3", "7"]))],
            r"words.npz: y holds str32 values, not numbers \(e.g. '3'\)",
        ),
        (lambda r, t: ["--data", _truncated(r, t)], r"cut.npz is not a readable .npz file: File is not a zip file"),
        (lambda r, t: ["--data", _claims_a_billion(t)], r"bomb.npz: x.npy claims shape \(1000000000, 1, 28, 28\) of uint8"),
        (lambda r, t: ["--model", _exits(t) + ":Net"], r"importing .*exits.py called sys.exit\(3\); put script code under"),
    ],
)
def test_bad_input_is_one_line_before_any_attack(user_files, tmp_path, capsys, change, message):
    root, _ = user_files
    argv = _cli(root)
    for flag, value in zip(*[iter(change(root, tmp_path))] * 2):
        argv[argv.index(flag) + 1] = value
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    import re

    assert re.search(message, err), err
    assert not out.exists(), "refused before any evaluation started"


def _truncated(root, tmp_path) -> str:
    whole = (root / "digits.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    return str(tmp_path / "cut.npz")


def _claims_a_billion(tmp_path) -> str:
    """An .npz whose x.npy header claims 1e9 images in a few hundred bytes (numpy would allocate 730 GiB first)."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 1, 28, 28)})
    labels = io.BytesIO()
    np.save(labels, np.zeros(3, np.int64))
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as archive:
        archive.writestr("x.npy", header.getvalue() + bytes(100))
        archive.writestr("y.npy", labels.getvalue())
    return str(tmp_path / "bomb.npz")


def _exits(tmp_path) -> str:
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    return str(tmp_path / "exits.py")


def _saved_other(tmp_path) -> str:
    torch.save({"state_dict": {"conv.weight": torch.zeros(8, 1, 3, 3)}}, tmp_path / "other.pt")
    return str(tmp_path / "other.pt")


def test_the_python_call_refuses_bad_input_in_one_line(user_files):
    root, tiny_net = user_files
    data = np.load(root / "digits.npz")
    cases = [
        (dict(model=lambda x: x, data=(data["x"], data["y"])), "model must be a torch.nn.Module"),
        (dict(model=tiny_net(), data=(data["x"], data["y"][:2])), "x holds 6 samples but y 2 labels"),
        (
            dict(model=tiny_net(), data=(data["x"].astype(np.float32), data["y"])),
            r"inputs in \[0, 255\], expected inside \[0, 1\]",
        ),
        (dict(model=tiny_net(), data="no-such-data"), "neither a dataset name"),
        (dict(model=tiny_net(), data=(data["x"], data["y"]), lam=None), "without a preset, pass lam"),
        (dict(model=tiny_net(), data=(data["x"], data["y"]), eps=None), r"pass --eps \(the attack radius; without a preset"),
        (dict(model=tiny_net(), data=(data["x"], data["y"]), attacks=["PGDD"]), r"unknown attack column\(s\) \['PGDD'\]"),
        (dict(model=tiny_net(), data=(data["x"], data["y"]), bogus=1), "unknown option.* bogus; evaluate takes: attacks"),
        (dict(model=tiny_net(), data=(data["x"], data["y"]), batch_size=0), r"batch_size \(--batch-size\) must be a positive"),
        (dict(model=tiny_net(), data=(data["x"][:0], data["y"][:0])), "x and y hold no samples"),
        (dict(model=tiny_net(), data=(data["x"], ["a"] * 6)), r"y holds str\d+ values, not numbers \(e.g. 'a'\)"),
    ]
    for kwargs, message in cases:
        kwargs = {"eps": 0.1, "lam": 0.1, "verbose": False, **kwargs}
        with pytest.raises(ValueError, match=message):
            advpnml.evaluate(kwargs.pop("model"), kwargs.pop("data"), **kwargs)
