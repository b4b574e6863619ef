"""A run's identity is the model as it computes: its weights, and its outputs on a seeded probe batch whatever code
computes them (a helper outside ``forward``, another method, another file); a ``--model FILE.py`` run resumes in a
fresh interpreter and from a copy of the file; a refused resume names what changed; the same run by another path
resumes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from advpnml.cli import main
from advpnml.config import AttackSpec, EvalSettings
from advpnml.evaluation.engine import evaluate
from advpnml.evaluation.identity import PROBE_RTOL, model_digest, probe_outputs, probes_differ
from advpnml.evaluation.records import RunMismatchError
from advpnml.models import create_model, save_checkpoint, set_memory_format
from advpnml.runtime import QUIET


@pytest.mark.parametrize(
    "tensor",
    [
        torch.tensor(7),
        torch.ones(4, 3, 1, 1).to(memory_format=torch.channels_last),
        torch.rand(2, 3, 5, 5).to(memory_format=torch.channels_last),
        torch.ones(3, dtype=torch.bfloat16),
        torch.tensor([True, False]),
        torch.zeros(0, 3),
        torch.rand(4, 6).t(),
    ],
)
def test_any_tensor_hashes_and_its_layout_does_not_matter(tensor):
    plain, laid_out = torch.nn.Module(), torch.nn.Module()
    plain.register_buffer("b", tensor.contiguous())
    laid_out.register_buffer("b", tensor)
    assert model_digest(plain) == model_digest(laid_out)


def test_batch_norm_and_channels_last_models_hash_and_agree_across_formats(cifar_like):
    for name in ("preact_resnet18", "resnet4b", "wide_resnet"):
        torch.manual_seed(0)
        model = create_model(name, **({"depth": 10, "widen_factor": 1} if name == "wide_resnet" else {}))
        digests, probes = [], []
        for fmt in ("contiguous", "channels_last"):
            set_memory_format(model, fmt)
            digests.append(model_digest(model))
            probes.append(probe_outputs(model, cifar_like))
        assert digests[0] == digests[1], name
        assert probes_differ(*probes) is None, name


@pytest.fixture(scope="module")
def cifar_like():
    from advpnml.data.user import tensors_dataset

    return tensors_dataset(torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(4))


def test_probes_agree_within_the_tolerance_and_say_where_they_differ():
    base = [[1.0, -2.0, 30.0], [0.5, 0.25, -4.0]]
    assert probes_differ(base, base) is None
    near = [[v + PROBE_RTOL * 30 * 0.9 for v in row] for row in base]
    assert probes_differ(base, near) is None, "within the tolerance of the outputs' scale (30)"
    far = [row[:] for row in base]
    far[1][2] = -3.0
    assert probes_differ(base, far) == (
        "outputs differ by up to 1 (tolerance 0.002 of the outputs' scale 30; probe 1, output 2: -4 -> -3)"
    )
    assert probes_differ(base, [row[:2] for row in base]) == "outputs of shape (2, 3) -> (2, 2)"
    assert probes_differ("garbage", base) == "the stored probe is unreadable"


def test_a_model_that_draws_random_numbers_probes_the_same_every_time(mnist5k_test):
    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(784, 10)

        def forward(self, x):
            return self.linear(x.flatten(1) + 0.1 * torch.randn_like(x.flatten(1)))

    torch.manual_seed(0)
    model = Noisy()
    first = probe_outputs(model, mnist5k_test.head(4))
    torch.manual_seed(123)  # the global generator elsewhere: the probe seeds and restores its own
    state = torch.get_rng_state()
    assert probe_outputs(model, mnist5k_test.head(4)) == first
    assert torch.equal(torch.get_rng_state(), state), "the caller's random state is untouched"


USER_FILE = textwrap.dedent("""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from helpers import squash


    def act(x):
        return torch.relu(x)


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a = nn.Linear(784, 32)
            self.b = nn.Linear(32, 10)

        def features(self, x):
            return act(self.a(x.flatten(1)))

        def forward(self, x):
            return squash(self.b(F.dropout(self.features(x), 0.0)))
""")
HELPERS_FILE = "def squash(x):\n    return x\n"


def _user_run(folder, out, tmp_path) -> list[str]:
    return [
        "evaluate",
        "--model",
        f"{folder / 'net.py'}:Net",
        "--data",
        str(tmp_path / "digits.npz"),
        "--eps",
        "0.1",
        "--lam",
        "0.1",
        "--attacks",
        "FGSM",
        "--checks",
        "0",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]


@pytest.fixture
def user_model(tmp_path, mnist5k_test):
    import numpy as np

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "net.py").write_text(USER_FILE)
    (folder / "helpers.py").write_text(HELPERS_FILE)
    test = mnist5k_test.head(4)
    np.savez(tmp_path / "digits.npz", x=(test.x * 255).round().byte().numpy(), y=test.y.numpy())
    yield folder
    sys.modules.pop("helpers", None)  # another file the model imports: the next import reads it anew
    if str(folder) in sys.path:
        sys.path.remove(str(folder))


def test_a_user_model_run_resumes_in_a_fresh_interpreter_and_from_a_copy(user_model, tmp_path, capsys):
    argv = _user_run(user_model, tmp_path / "out", tmp_path)
    for _ in range(2):  # each a new process: Python's salted hash() once named the module, so no rerun resumed
        done = subprocess.run([sys.executable, "-m", "advpnml", *argv], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming: 4 samples" in done.stdout
    copy = tmp_path / "copy"
    shutil.copytree(user_model, copy)
    sys.modules.pop("helpers", None)
    assert main(_user_run(copy, tmp_path / "out", tmp_path)) == 0, capsys.readouterr().err
    assert "resuming: 4 samples" in capsys.readouterr().out
    header = json.loads((tmp_path / "out" / "records.jsonl").read_text().splitlines()[0])
    assert header["identity"]["architecture"] == "Net (net.py)"


HELD = """

import os
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_STOP = torch.load(os.path.join(_HERE, "stop_at.pt"))


class Held(Net):
    \"\"\"Net, which waits at sample 6's clean image while the file 'hold' exists: the test's Ctrl-C always lands
    part-way, however fast or slow the machine.\"\"\"

    def forward(self, x):
        if x.shape[0] == 1 and torch.equal(x[0], _STOP):
            while os.path.exists(os.path.join(_HERE, "hold")):
                time.sleep(0.01)
        return super().forward(x)
"""


def test_a_user_model_run_stopped_with_ctrl_c_resumes_in_a_new_process(user_model, tmp_path, mnist5k_test):
    import numpy as np

    pixels = (mnist5k_test.head(12).x * 255).round().byte()
    np.savez(tmp_path / "digits.npz", x=pixels.numpy(), y=mnist5k_test.head(12).y.numpy())
    torch.save(pixels[6].float().div(255.0), user_model / "stop_at.pt")  # as the .npz reader scales it
    (user_model / "net.py").write_text(USER_FILE + HELD)
    (user_model / "hold").touch()
    argv = [sys.executable, "-m", "advpnml", *_user_run(user_model, tmp_path / "out", tmp_path)]
    argv[argv.index(f"{user_model / 'net.py'}:Net")] = f"{user_model / 'net.py'}:Held"
    argv[argv.index("--batch-size") + 1] = "1"
    records = tmp_path / "out" / "records.jsonl"
    # Ctrl-C as a terminal sends it: a job started in the background of a non-interactive shell (CI) inherits SIGINT
    # ignored, and Python then never raises KeyboardInterrupt, so the child gets the default disposition back
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    while proc.poll() is None and (not records.exists() or len(records.read_text().splitlines()) < 3):
        time.sleep(0.02)  # until two samples are written; it cannot pass sample 6 while 'hold' exists
    proc.send_signal(signal.SIGINT)
    (user_model / "hold").unlink()  # never a hang: a run that ignored the signal ends, and the assert below says so
    out, err = proc.communicate()
    assert proc.returncode != 0 and "the same command resumes after it" in out + err, (out + err)[-2000:]
    assert 1 < len(records.read_text().splitlines()) < 13
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming:" in done.stdout and len(records.read_text().splitlines()) == 13


@pytest.mark.parametrize(
    "file, old, new",
    [
        ("net.py", "return torch.relu(x)", "return torch.sigmoid(x)"),  # a helper outside forward
        ("net.py", "return act(self.a(x.flatten(1)))", "return act(self.a(x.flatten(1)) * 1.5)"),  # a second method
        ("net.py", "F.dropout(self.features(x), 0.0)", "F.softplus(self.features(x))"),  # a functional call
        ("helpers.py", "return x", "return 2 * x"),  # another file
    ],
    ids=["helper", "method", "functional", "other-file"],
)
def test_an_edit_anywhere_the_model_computes_is_refused(user_model, tmp_path, capsys, file, old, new):
    argv = _user_run(user_model, tmp_path / "out", tmp_path)
    assert main(argv) == 0, capsys.readouterr().err
    source = user_model / file
    assert old in source.read_text()
    source.write_text(source.read_text().replace(old, new))
    sys.modules.pop("helpers", None)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "other content: the model as it computes (its outputs on the probe batch" in err, err
    source.write_text(source.read_text().replace(new, old))  # edited back: the same model, it resumes
    sys.modules.pop("helpers", None)
    assert main(argv) == 0 and "resuming: 4 samples" in capsys.readouterr().out


def _settings(n: int = 2, **changes) -> EvalSettings:
    values = dict(
        dataset="mnist5k",
        split="test",
        n=n,
        eps=0.1,
        refine_eps=0.1,
        batch_size=2,
        attacks=[AttackSpec("FGSM", "fgsm", {}, True, "transfer")],
    )
    return EvalSettings(**{**values, **changes})


def test_a_changed_normalization_is_another_model(mnist5k_test, tmp_path):
    torch.manual_seed(0)
    model = create_model("madry_cnn", width=0.125, mean=(0.1,), std=(0.3,))
    evaluate(model, mnist5k_test.head(2), _settings(), tmp_path, QUIET)
    renormalized = create_model("madry_cnn", width=0.125, mean=(0.2,), std=(0.3,))
    renormalized.load_state_dict(model.state_dict())  # the same weights: the state dict cannot tell them apart
    assert model_digest(renormalized) == model_digest(model)
    with pytest.raises(RunMismatchError, match=r"other content: the model as it computes \(its outputs on the probe batch"):
        evaluate(renormalized, mnist5k_test.head(2), _settings(), tmp_path, QUIET)


def test_one_file_read_as_two_sources_is_two_models(cifar10_dir, tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(create_model("resnet4b").state_dict(), tmp_path / "resnet4b.pth")
    argv = [
        "evaluate",
        "--checkpoint",
        str(tmp_path / "resnet4b.pth"),
        "--config",
        "cifar10",
        "--data-dir",
        str(cifar10_dir),
        "--samples",
        "2",
        "--attacks",
        "FGSM",
        "--checks",
        "0",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main([*argv, "--source", "abcrown_resnet4b"]) == 0
    capsys.readouterr()
    assert main([*argv, "--source", "resnet4b"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the architecture (resnet4b (source abcrown_resnet4b) -> resnet4b)" in err


def test_a_refused_resume_names_the_setting_that_changed(standard_model, mnist5k_test, tmp_path):
    two = [
        AttackSpec("FGSM", "fgsm", {}, True, "transfer"),
        AttackSpec("PGD", "pgd", {"steps": 2, "step_size": 0.05}, True, "transfer"),
    ]
    evaluate(standard_model, mnist5k_test.head(2), _settings(attacks=two), tmp_path, QUIET)
    cases = [
        (_settings(attacks=two[::-1]), r"the attack columns' order \(FGSM, PGD -> PGD, FGSM\)"),
        (_settings(attacks=two, eps=0.2), r"eps \(0.1 -> 0.2\)"),
        (
            _settings(attacks=[two[0], AttackSpec("PGD", "pgd", {"steps": 3, "step_size": 0.05}, True, "transfer")]),
            r"attack 'PGD' params.steps \(2 -> 3\)",
        ),
        (_settings(attacks=two[:1]), "attack columns removed: PGD"),
    ]
    for settings, message in cases:
        with pytest.raises(RunMismatchError, match=message):
            evaluate(standard_model, mnist5k_test.head(2), settings, tmp_path, QUIET)


def test_the_same_checkpoint_by_another_path_resumes(standard_model, tmp_path, capsys, monkeypatch):
    checkpoint = save_checkpoint(tmp_path / "m.pt", standard_model, dataset="mnist5k")
    common = [
        "evaluate",
        "--samples",
        "2",
        "--attacks",
        "FGSM",
        "--checks",
        "0",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main([*common, "--checkpoint", str(checkpoint)]) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main([*common, "--checkpoint", "m.pt"]) == 0, capsys.readouterr().err
    assert "resuming: 2 samples" in capsys.readouterr().out
    header = json.loads((tmp_path / "out" / "records.jsonl").read_text().splitlines()[0])
    assert header["settings"]["model"] == str(checkpoint), "the header keeps the path it was written with"
    save_checkpoint(tmp_path / "m.pt", create_model("madry_cnn", width=0.25), dataset="mnist5k")  # other weights, same path
    assert main([*common, "--checkpoint", "m.pt"]) == 2
    assert "the model's weights" in capsys.readouterr().err
