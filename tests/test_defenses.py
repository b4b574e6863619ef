"""The defense registry: Hedge, the anti-adversary and TTE against plain loops written from their papers' equations,
their backward modes against hand-written autograd, EOT and the worst-of-draws scoring, one-line errors, a user's
own defense (a masked one included) through ``advpnml.evaluate`` and ``advpnml evaluate --defense``."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import advpnml
from advpnml.cli import main
from advpnml.config import EvalSettings, from_preset
from advpnml.defense import (
    AntiAdversary,
    ExpectationOverTransformation,
    Hedge,
    TransformEnsemble,
    create_defense,
    defense_parameters,
)
from advpnml.evaluation.engine import _predict, attack_target


@pytest.fixture
def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 16), nn.Tanh(), nn.Linear(16, 5)).double().eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(6, 2, 5, 5, generator=gen, dtype=torch.float64)
    x[0, 0, :2] = 0.0  # pixels at the box's edges, so the clip acts
    x[1, 1, 3:] = 1.0
    return x, torch.randint(0, 5, (6,), generator=gen)


def hedge_loop(model, x, steps, step_size, radius, noise):
    """Wu et al.'s Hedge, one sample at a time: ascend sum_c CE(f(z), c) by sign steps in the ball, clip to [0, 1]."""
    out = []
    for i in range(len(x)):
        z = (x[i] + (2 * noise[i] - 1) * radius).clamp(x[i] - radius, x[i] + radius).clamp(0, 1)
        for _ in range(steps):
            z = z.detach().requires_grad_(True)
            logits = model(z.unsqueeze(0))
            loss = sum(F.cross_entropy(logits, torch.tensor([c])) for c in range(logits.shape[1]))
            (g,) = torch.autograd.grad(loss, z)
            z = torch.min(torch.max(z + step_size * g.sign(), x[i] - radius), x[i] + radius).clamp(0, 1)
        out.append(model(z.detach().unsqueeze(0))[0])
    return torch.stack(out)


def test_hedge_matches_the_papers_loop(mlp, batch):
    x, _ = batch
    hedge = Hedge(mlp, steps=4, step_size=0.05, radius=0.1, seed=3)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    with torch.no_grad():
        ours = hedge(x)
    torch.testing.assert_close(ours, hedge_loop(mlp, x, 4, 0.05, 0.1, noise), rtol=1e-10, atol=1e-10)
    assert hedge.random
    hedge.reseed(3)
    torch.testing.assert_close(hedge(x).detach(), ours)  # reseeded: the same draws
    assert not torch.equal(hedge(x).detach(), ours)  # the next call draws anew


def test_anti_adversary_matches_the_papers_loop(mlp, batch):
    x, _ = batch
    anti = AntiAdversary(mlp, steps=3, step_size=0.07)
    expected = []
    for i in range(len(x)):
        own = mlp(x[i : i + 1]).argmax(1)
        gamma = torch.zeros_like(x[i : i + 1])
        for _ in range(3):
            gamma.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(mlp(x[i : i + 1] + gamma), own), gamma)
            gamma = (gamma - 0.07 * g.sign()).detach()  # no ball, no clip: the authors' wrapper
        expected.append(mlp(x[i : i + 1] + gamma)[0])
    with torch.no_grad():
        torch.testing.assert_close(anti(x), torch.stack(expected), rtol=1e-10, atol=1e-10)
    assert not anti.random


def test_tte_averages_the_flipped_and_shifted_views(mlp, batch):
    x, _ = batch
    tte = TransformEnsemble(mlp, flip=True, shift=1)
    views = [x]
    for dy in (1, -1):
        for dx in (1, -1):  # a corner crop of the 1-pixel padding: the image shifted by (dy, dx), zeros moved in
            shifted = torch.zeros_like(x)
            src = x[..., max(-dy, 0) : 5 - max(dy, 0), max(-dx, 0) : 5 - max(dx, 0)]
            shifted[..., max(dy, 0) : 5 - max(-dy, 0), max(dx, 0) : 5 - max(-dx, 0)] = src
            views.append(shifted)
    views += [v.flip(-1) for v in views]
    expected = torch.stack([mlp(v) for v in views]).mean(0)
    torch.testing.assert_close(tte(x), expected, rtol=1e-12, atol=1e-12)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(tte(xr)[:, 0].sum(), xr)
    assert g.abs().sum() > 0  # differentiable end to end: no BPDA needed


def _replayed(model, x, steps, step_size, radius, second_order):
    """The refinement as plain autograd: sign detached (or straight-through), ball and clip exact."""
    z = x
    for _ in range(steps):
        zz = z if second_order else z.detach().requires_grad_(True)
        logits = model(zz)
        loss = (logits.shape[1] * logits.logsumexp(1) - logits.sum(1)).sum()
        (g,) = torch.autograd.grad(loss, zz, create_graph=second_order)
        direction = g + (g.sign() - g).detach() if second_order else g.sign()
        z = torch.min(torch.max(z + step_size * direction, x - radius), x + radius).clamp(0, 1)
    return z


@pytest.mark.parametrize("backward", ["identity", "second-order-ste"])
def test_refinement_backward_modes_match_hand_written_autograd(mlp, batch, backward):
    x, _ = batch
    hedge = Hedge(mlp, steps=3, step_size=0.05, radius=0.1, random_start=False).with_backward(backward, "exact")
    xr = x.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(hedge(xr)[:, 1].sum(), xr)
    xh = x.clone().requires_grad_(True)
    (theirs,) = torch.autograd.grad(mlp(_replayed(mlp, xh, 3, 0.05, 0.1, backward != "identity"))[:, 1].sum(), xh)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    straight = hedge.with_backward("identity", "straight")
    xs = x.clone().requires_grad_(True)
    (identity,) = torch.autograd.grad(straight(xs)[:, 1].sum(), xs)
    refined = straight.refine(x).detach().requires_grad_(True)
    (at_refined,) = torch.autograd.grad(mlp(refined)[:, 1].sum(), refined)
    torch.testing.assert_close(identity, at_refined)  # BPDA: the gradient at the refined input, passed straight to x


def test_eot_and_worst_of_draws_scoring(mlp, batch):
    x, y = batch
    hedge = Hedge(mlp, steps=2, step_size=0.2, radius=0.4, eot_draws=4, score_runs=6)
    spec = advpnml.config.AttackSpec("A", "pgd", {"refine_steps": 1}, base=False)
    target, _ = attack_target(hedge, spec)
    assert isinstance(target, ExpectationOverTransformation) and target.draws == 4 and target.defense.steps == 1
    hedge.reseed(0)
    shortened = hedge.with_backward(refine_steps=1)
    draws = torch.stack([shortened(x).log_softmax(1) for _ in range(4)]).mean(0)
    hedge.reseed(0)  # the copies share the generator: reseeding the defense reseeds them
    torch.testing.assert_close(target(x), draws)
    hedge.reseed(5)
    runs = [hedge(x).argmax(1) for _ in range(6)]
    hedge.reseed(5)
    pred = _predict(hedge, x, y)
    wrong_somewhere = torch.stack([r != y for r in runs]).any(0)
    assert torch.equal(pred != y, wrong_somewhere)  # correct only when every draw is


def test_a_column_scored_by_another_forward_keeps_its_deepest_fooling_point(mlp):
    """Leaving a run at the first point that fools the attacked forward is sound only where that forward scores it."""
    steps = advpnml.config.AttackSpec("A", "apgd", {"early_stop": "steps"}, base=False)
    shortened = advpnml.config.AttackSpec("A", "apgd", {"early_stop": "steps", "refine_steps": 1}, base=False)
    pnml, anti = advpnml.AdversarialPnml(mlp, 0.1), create_defense("anti-adversary", mlp, {})
    hedge = Hedge(mlp, steps=2, step_size=0.2, radius=0.4)
    assert attack_target(pnml, steps)[1] is steps and attack_target(anti, steps)[1] is steps
    assert attack_target(hedge, steps)[1].params["early_stop"] is True  # random: scored by its worst draw
    assert attack_target(anti, shortened)[1].params == {"early_stop": True, "refine_steps": 1}


def test_registry_parameters_and_one_line_errors(mlp):
    assert set(defense_parameters("hedge")) >= {"steps", "step_size", "radius", "eot_draws", "score_runs"}
    assert isinstance(create_defense("tte", mlp, {"flip": False}), TransformEnsemble)
    bad = [
        (("nope", {}), "unknown defense 'nope'"),
        (("hedge", {"stepz": 3}), "no parameter 'stepz'"),
        (("hedge", {"steps": 0}), "hedge steps must be an integer >= 1"),
        (("anti-adversary", {"step_size": -1.0}), "step_size"),
        (("tte", {"shift": -1}), "tte shift"),
    ]
    for (name, params), message in bad:
        with pytest.raises(ValueError, match=message):
            create_defense(name, mlp, params)


def test_the_pnml_settings_digest_is_unchanged_by_the_registry():
    """A pNML run's digest leaves the new keys out at their defaults: every published records file still resumes."""
    import hashlib
    from dataclasses import asdict

    settings = from_preset("mnist5k").eval_settings("mnist5k", "test", 10, suite="strong")
    assert settings.defense_name == "pnml" and "APGD-T shortened" not in [s.column for s in settings.attacks]
    old = {
        k: v
        for k, v in asdict(settings).items()
        if k not in ("cascade", "bpda", "refine_direction", "defense_name", "defense_params")
    }
    assert settings.digest() == hashlib.sha256(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()[:16]
    stored = json.loads(json.dumps(old, default=str))  # a header written before the registry, read back as it ran
    assert EvalSettings.from_stored(stored) == settings and EvalSettings.from_stored(stored).digest() == settings.digest()
    hedge = from_preset("mnist5k").eval_settings("mnist5k", "test", 10, defense="hedge", suite="strong")
    assert "APGD-T shortened" in [s.column for s in hedge.attacks]
    assert hedge.digest() != settings.digest() and hedge.defense_params["radius"] == 0.3
    anti = from_preset("mnist5k").eval_settings("mnist5k", "test", 10, defense="anti-adversary", suite="strong")
    assert "APGD-T shortened" not in [s.column for s in anti.attacks]  # its 2 steps are no longer than the 5 it would keep
    tte = from_preset("mnist5k").eval_settings("mnist5k", "test", 10, defense="tte", suite="strong")
    columns = [s.column for s in tte.attacks]
    assert "Joint hypotheses" not in columns and not any("2nd-order" in c or "exact-clip" in c for c in columns)
    with pytest.raises(ValueError, match="needs the defense's hypotheses hook"):
        from_preset("mnist5k").eval_settings("mnist5k", "test", 10, defense="hedge", only=["Joint hypotheses"], suite="strong")
    with pytest.raises(ValueError, match="unknown defense"):
        EvalSettings("mnist5k", "test", 1, 0.1, 0.1, [], defense_name="nope")


def test_the_documented_croce_hedge_command_runs_their_budgets():
    """docs/defenses.md's command for Croce et al.'s Hedge anchor gives their setting (wu_2021/run_eval.sh): targeted
    DLR APGD, 50 steps x 5 targets, on the base model and through the 5-step refinement; Hedge 20 steps of 4/255 in
    the 8/255 ball, EOT 3, scored as the worst of 5 draws."""
    import shlex
    from pathlib import Path

    text = Path(__file__).resolve().parents[1].joinpath("docs", "defenses.md").read_text()
    block = text[text.index("    advpnml evaluate --source carmon2019") :].split("\n\n")[0]
    args = shlex.split(block.replace("\\\n", " "))
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    columns = args[args.index("--attacks") + 1].split(",")
    settings = from_preset(args[args.index("--config") + 1], sets).eval_settings(
        "cifar10",
        "test",
        int(args[args.index("--samples") + 1]),
        eps=float(args[args.index("--eps") + 1]),
        defense=args[args.index("--defense") + 1],
        only=columns,
        suite="strong",
    )
    assert settings.n == 200 and abs(settings.eps - 8 / 255) < 1e-6
    transfer, through = settings.attacks
    assert (transfer.attack, transfer.base, transfer.defense) == ("apgd-t", True, "transfer")
    assert (through.attack, through.base, through.defense) == ("apgd-t", False, "direct")
    assert all(s.params["steps"] == 50 and s.params["n_targets"] == 5 for s in (transfer, through))
    assert through.params["refine_steps"] == 5
    hedge = settings.defense_params
    assert hedge["steps"] == 20 and abs(hedge["step_size"] - 4 / 255) < 1e-9 and abs(hedge["radius"] - 8 / 255) < 1e-9
    assert hedge["eot_draws"] == 3 and hedge["score_runs"] == 5 and hedge.get("random_start", True)


DEFENSE_FILE = textwrap.dedent('''
    import torch
    import torch.nn as nn


    class Quantized(nn.Module):
        """A user's defense: the input rounded to 4 grey levels. Its gradient is zero almost everywhere (masked)."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(torch.round(x * 3) / 3)


    def smoothed(model):
        return Smoothed(model)


    class Smoothed(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(0.5 * x + 0.5 * x.mean(dim=(2, 3), keepdim=True))


    def not_a_module(model):
        return 7


    class Wider(Quantized):
        def forward(self, x):
            return torch.cat([super().forward(x), x.flatten(1)[:, :1]], 1)
''')
#: cheap columns: transfer, an adaptive one, the score-based black box
COLUMNS = "PGD,Adaptive-margin,Square"
SETS = {"PGD.steps": 10, "Adaptive-margin.steps": 10, "Square.max_queries": 200}


def test_a_masked_defense_is_broken_by_transfer_and_black_box_and_flagged(standard_model, mnist5k_test, tmp_path, capsys):
    (tmp_path / "mydefense.py").write_text(DEFENSE_FILE)
    x, y = mnist5k_test.x[:16], mnist5k_test.y[:16]
    namespace: dict = {}
    exec(DEFENSE_FILE, namespace)
    masked = namespace["Quantized"](standard_model)
    ev = advpnml.evaluate(standard_model, (x, y), eps=0.3, defense=masked, attacks=COLUMNS, set=SETS, checks=16, verbose=False)
    settings = ev.result.settings
    assert settings.defense_name == "own: Quantized" and [s.column for s in settings.attacks] == COLUMNS.split(",")
    table = ev.accuracy()["defense"]
    assert table["Natural"] >= 0.75
    assert table["Adaptive-margin"] >= table["Natural"] - 0.07  # its own gradient is zero: the white box stalls ...
    assert min(table["PGD"], table["Square"]) <= table["Natural"] - 0.4  # ... transfer and the black box do not
    flagged = {c.name for c in ev.checks if c.row == "defense" and c.status == "warn"}
    assert "zero input gradients" in flagged and "white-box vs transfer" in flagged

    out = tmp_path / "cli"
    code = main(
        [
            "evaluate",
            "--model",
            "advpnml.models.mnist_cnn:madry_cnn",
            "--defense",
            f"{tmp_path / 'mydefense.py'}:smoothed",
            "--data",
            "mnist5k",
            "--samples",
            "4",
            "--attacks",
            "PGD,Square",
            "--set",
            "PGD.steps=2",
            "--set",
            "Square.max_queries=10",
            "--checks",
            "0",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    written = json.loads((out / "results.json").read_text())
    assert written["settings"]["defense_name"] == "own: smoothed (mydefense.py)"
    assert "eps=0.3, own: smoothed (mydefense.py) ->" in capsys.readouterr().out, "the log names the defense, not a lambda"
    assert set(written["summary"]) == {"base", "defense"}


@pytest.mark.parametrize(
    "defense, message",
    [
        ("nope", "unknown defense 'nope'"),
        ("{dir}/mydefense.py:missing", "has no 'missing'"),
        ("{dir}/mydefense.py:not_a_module", "returned a int, not a torch.nn.Module"),
        ("{dir}/mydefense.py:Wider", "returns 11 scores per input but the model has 10 classes"),
    ],
)
def test_bad_defenses_are_one_line_before_any_attack(tmp_path, capsys, defense, message):
    (tmp_path / "mydefense.py").write_text(DEFENSE_FILE)
    args = ["evaluate", "--model", "advpnml.models.mnist_cnn:madry_cnn", "--defense", defense.format(dir=tmp_path)]
    args += ["--data", "mnist5k", "--samples", "2", "--attacks", "PGD", "--checks", "0", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o" / "records.jsonl").exists()


def test_out_of_range_defense_parameters_are_one_line(capsys, tmp_path):
    args = ["evaluate", "--model", "advpnml.models.mnist_cnn:madry_cnn", "--defense", "hedge", "--set", "defense.hedge.steps=0"]
    args += ["--data", "mnist5k", "--samples", "2", "--attacks", "PGD", "--checks", "0", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hedge steps must be an integer >= 1, got 0" in err[0]


def test_a_published_pnml_run_resumes_and_its_predictions_reproduce_through_the_registry(shared_data, tmp_path):
    """The registry changes no pNML result: a records file written before it resumes whole (same digest, same
    identity), and the pNML built by name predicts each sample's natural and FGSM-transferred label as recorded."""
    import shutil

    from advpnml.config import AttackSpec
    from advpnml.evaluation.engine import build_attack, evaluate
    from advpnml.evaluation.records import SKIPPED
    from advpnml.runtime import QUIET
    from tests.conftest import REPO

    published = REPO / "results" / "refinement_variant" / "lenet5_toward"
    shutil.copy(published / "records.jsonl", tmp_path / "records.jsonl")
    lines = (published / "records.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    settings = EvalSettings(**{**header["settings"], "attacks": [AttackSpec(**a) for a in header["settings"]["attacks"]]})
    assert settings.digest() == header["digest"] and settings.defense_name == "pnml"
    model = advpnml.load_external(shared_data / "weights/advertorch_mnist_lenet5/mnist_lenet5_advtrained.pt", "advertorch_lenet5")
    data = advpnml.load_dataset("mnist", "test", shared_data / "mnist", n=100)
    result = evaluate(model, data, settings, tmp_path, QUIET)
    assert result.samples_timed == 0  # nothing recomputed: every sample resumed
    assert result.accuracy() == json.loads((published / "results.json").read_text())["accuracy"]

    records = [json.loads(line) for line in lines[1:] if json.loads(line).get("type") != "header"]
    defense = create_defense("pnml", model.eval(), {}, settings.defense)
    fgsm = build_attack(settings.attacks[0], settings.eps, (0.0, 1.0), 0)
    with torch.no_grad():
        natural = defense(data.x).argmax(1)
    transferred = defense(fgsm(model, data.x, data.y)).detach().argmax(1)
    for record in records:
        i, pred = record["index"], record["pred"]["defense"]
        assert pred["Natural"] == int(natural[i])
        if pred["FGSM"] != SKIPPED:
            assert pred["FGSM"] == int(transferred[i])


def test_reproduce_defenses_writes_one_table_a_figure_and_the_logs(monkeypatch, tmp_path):
    """``advpnml reproduce defenses`` on a tiny checkpoint of its own (the shipped models take minutes): every defense
    named gets a row with each family's worst case, the base model's beside it and the inference cost."""
    from advpnml.experiments import defenses as experiment
    from advpnml.models import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "tiny.pt", advpnml.create_model("madry_cnn", width=0.125), dataset="mnist5k")
    monkeypatch.setitem(experiment.SHIPPED, "tiny", ("checkpoint", str(tmp_path / "tiny.pt"), "mnist5k", 0.3, "mnist5k", 0.1))
    args = ["reproduce", "defenses", "--models", "tiny", "--defenses", "anti-adversary,tte", "--samples", "3"]
    args += ["--attacks", "PGD,APGD-CE adaptive,Square", "--set", "PGD.steps=2", "--set", "PGD.restarts=1"]
    args += ["--set", "APGD-CE adaptive.steps=2", "--set", "Square.max_queries=5", "--checks", "0"]
    assert main([*args, "--step-rule", "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    table = (tmp_path / "out" / "defenses.md").read_text()
    assert "| tiny (eps 0.3) | Anti-adversary |" in table and "| tiny (eps 0.3) | TTE |" in table
    assert "every robust number is an upper bound" in table
    rows = json.loads((tmp_path / "out" / "defenses.json").read_text())["rows"]
    assert {r["defense"] for r in rows} == {"anti-adversary", "tte"}
    assert all(r["samples"] == 3 and r["worst case"] <= r["clean"] and r["ms_per_image"] > 0 for r in rows)
    first = json.loads((tmp_path / "out" / "tiny" / "tte" / "timing.json").read_text())
    assert main([*args, "--step-rule", "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0  # resumed whole
    assert json.loads((tmp_path / "out" / "tiny" / "tte" / "timing.json").read_text()) == first  # keeps its first time
    (tmp_path / "out" / "defenses.md").unlink()
    assert main([*args, "--step-rule", "--collect", "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    collected = (tmp_path / "out" / "defenses.md").read_text()
    same = [line.split("|")[:-3] for line in table.splitlines()[4:]]  # all but the cost, measured anew
    assert [line.split("|")[:-3] for line in collected.splitlines()[4:]] == same
    assert main([*args, "--collect", "--out", str(tmp_path / "nothing"), "--device", "cpu"]) == 2  # no run there
    # A finished run of other settings is read as it ran, and the table names what differs from the command.
    assert main([*args, "--set", "PGD.steps=3", "--collect", "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    other = (tmp_path / "out" / "defenses.md").read_text()
    assert [line.split("|")[:-3] for line in other.splitlines() if line.startswith("| tiny")] == [
        line.split("|")[:-3] for line in table.splitlines() if line.startswith("| tiny")
    ]
    assert "- tiny / Anti-adversary, tiny / TTE: attack 'PGD' params.steps (2 -> 3); " in other
    assert (tmp_path / "out" / "defenses.png").stat().st_size > 0
    assert "anti-adversary" in (tmp_path / "out" / "tiny" / "anti-adversary" / "run.log").read_text()
    settings = json.loads((tmp_path / "out" / "tiny" / "tte" / "results.json").read_text())["settings"]
    pgd = next(a for a in settings["attacks"] if a["column"] == "PGD")
    assert pgd["params"]["step_size"] == pytest.approx(2.5 * 0.3 / 2)  # Madry's rule at the model's eps
