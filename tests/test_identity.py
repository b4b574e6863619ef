"""A run's identity is the model as it computes: architecture or source, normalization, every buffer and parameter,
in any memory format; a refused resume names what changed, and the same run by another path resumes."""

from __future__ import annotations

import json

import pytest
import torch

from advpnml.cli import main
from advpnml.config import AttackSpec, EvalSettings
from advpnml.evaluation.engine import evaluate
from advpnml.evaluation.records import RunMismatchError
from advpnml.identity import computation_digest, model_digest
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
    assert model_digest(plain) == model_digest(laid_out) and computation_digest(plain) == computation_digest(laid_out)


def test_batch_norm_and_channels_last_models_hash_and_agree_across_formats():
    for name in ("preact_resnet18", "resnet4b", "wide_resnet"):
        torch.manual_seed(0)
        model = create_model(name, **({"depth": 10, "widen_factor": 1} if name == "wide_resnet" else {}))
        digests = []
        for fmt in ("contiguous", "channels_last"):
            set_memory_format(model, fmt)
            digests.append((model_digest(model), computation_digest(model)))
        assert digests[0] == digests[1], name


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
    with pytest.raises(RunMismatchError, match=r"other content: the model as it computes \(its layers, normalization"):
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
