"""CUDA-graph capture falls back to the same eager values off CUDA; on a GPU (the device script) it captures and agrees."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import advpnml
from advpnml.accel.graphs import GraphedAttack, GraphedStep, host_syncs
from advpnml.attacks import APGD, PGD
from advpnml.defense import AdversarialPnml
from advpnml.runtime import QUIET
from advpnml.training.step import GraphedPgdStep
from advpnml.training.trainer import TrainConfig, train

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_off_cuda_a_step_runs_eagerly_and_says_why_once():
    messages = []
    step = GraphedStep(lambda a, b: a * 2 + b, log=messages.append)
    for i in range(5):
        out = step(torch.full((3,), float(i)), torch.ones(3))
        assert torch.equal(out, torch.full((3,), 2.0 * i + 1))
    assert not step.captured and messages == ["CUDA graphs need CUDA tensors, got cpu; running eagerly"]
    assert GraphedStep(lambda a: a, enabled=False).reason == "capture disabled"


@pytest.mark.parametrize("attack", [PGD(0.3, 4, 0.05, seed=3), APGD(0.3, 8, seed=3)], ids=["pgd", "apgd"])
def test_a_graphed_attack_is_the_attack_itself(tiny_cnn, mnist5k_test, attack):
    x, y = mnist5k_test.x[:6], mnist5k_test.y[:6]
    graphed = GraphedAttack(attack)
    for _ in range(3):  # warm-up calls and the call that would capture
        assert torch.equal(graphed(tiny_cnn, x, y), attack(tiny_cnn, x, y))


def test_only_sync_free_runs_start_from_a_given_point(tiny_cnn, mnist5k_test):
    x, y = mnist5k_test.x[:2], mnist5k_test.y[:2]
    with pytest.raises(ValueError, match="restarts=2"):
        PGD(0.3, 2, 0.1, restarts=2).from_start(tiny_cnn, x, y, x)
    with pytest.raises(ValueError, match="APGDT loops over targets"):
        advpnml.attacks.APGDT(0.3, 2).from_start(tiny_cnn, x, y, x)
    with pytest.raises(ValueError, match="from_start"):
        GraphedAttack(advpnml.attacks.FGSM(0.3))


def _train(graphs: bool, messages: list[str], tmp_path, device: str = "cpu", **overrides):
    settings = dict(
        arch="madry_cnn",
        arch_kwargs={"width": 0.25},
        epochs=2,
        batch_size=25,
        attack_steps=3,
        attack_step_size=0.1,
        adaptive_epochs=1,
        eps=0.3,
    )
    config = TrainConfig(**{**settings, **overrides})
    runtime = replace(QUIET, device=torch.device(device), memory_format="contiguous", cuda_graphs=graphs, log=messages.append)
    return train(config, advpnml.load_dataset("mnist5k", "train", n=100), tmp_path / f"run{int(graphs)}", runtime=runtime)


def test_training_with_cuda_graphs_gives_the_eager_weights_and_history(tmp_path):
    """The captured step's function, run eagerly on CPU, is the default step: PGD epochs and an adaptive one."""
    messages: list[str] = []
    eager, eager_history = _train(False, messages, tmp_path)
    graphed, history = _train(True, messages, tmp_path)
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values()):
        assert torch.equal(a, b), name
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in history] == [
        {k: v for k, v in h.items() if k != "seconds"} for h in eager_history
    ]
    assert "CUDA graphs need CUDA tensors, got cpu; running eagerly" in messages


def test_cuda_graphs_are_ignored_with_a_reason_where_they_do_not_apply(tmp_path):
    messages: list[str] = []
    _train(True, messages, tmp_path, method="fast", adaptive_epochs=0, epochs=1)
    assert any("--cuda-graphs ignored: it captures PGD training, not fast" in m for m in messages)


@cuda
def test_on_a_gpu_the_attack_is_captured_and_agrees_with_eager(mnist5k_test):
    torch.manual_seed(0)
    model = advpnml.create_model("madry_cnn").cuda().eval()
    x, y = mnist5k_test.x[:64].cuda(), mnist5k_test.y[:64].cuda()
    attack = PGD(0.3, 10, 0.02, seed=1, keep_best=False)
    graphed = GraphedAttack(attack)
    for _ in range(3):
        replayed = graphed(model, x, y)
    assert graphed.graph.captured
    assert (replayed == attack(model, x, y)).float().mean() > 0.99  # same kernels; a sign may flip on a cuDNN algorithm change


@cuda
def test_on_a_gpu_captured_training_follows_eager_training(tmp_path):
    messages: list[str] = []
    eager, eager_history = _train(False, messages, tmp_path, device="cuda")
    graphed, history = _train(True, messages, tmp_path, device="cuda")
    assert not any("running eagerly" in m for m in messages), messages
    assert abs(history[-1]["loss"] - eager_history[-1]["loss"]) < 0.05


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_what_a_graph_captures_makes_no_host_sync(tiny_cnn, mnist5k_test, loss):
    """The CPU stand-in for a capture on a GPU: no .item(), bool(tensor) or data-sized output in the captured calls."""
    x, y = mnist5k_test.x[:4], mnist5k_test.y[:4]
    defended = AdversarialPnml(tiny_cnn, 0.1, check_inputs=False, max_batch=40)
    for target in (tiny_cnn, defended):
        for attack in (PGD(0.3, 2, 0.1, loss=loss), PGD(0.3, 2, 0.1, loss=loss, keep_best=False), APGD(0.3, 4, loss=loss)):
            start = attack.start_point(x)
            assert host_syncs(lambda: attack.from_start(target, x, y, start)) == [], (type(target).__name__, attack)
    model = advpnml.create_model("madry_cnn", width=0.25)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    step = GraphedPgdStep(model, model, optimizer, steps=2, step_size=0.1, refine_eps=0.1, bounds=(0.0, 1.0), log=lambda m: None)
    for adaptive in (False, True):
        step(x, y, 0.3, adaptive, seed=0)  # the first call builds what later calls reuse (the defense, optimizer state)
        step._attack = PGD(0.3, 2, 0.1, seed=1)
        start = step._attack.start_point(x)
        assert host_syncs(lambda: step._step(x, y, start)) == [], f"adaptive={adaptive}"
    assert host_syncs(lambda: x.sum().item()) == ["_local_scalar_dense"]
    assert host_syncs(lambda: x[x > 0.5]) == ["index with a boolean mask"]
    assert host_syncs(lambda: x.clone().__setitem__(x > 0.5, 0.0)) == ["index_put_ with a boolean mask"]


class _Tape(TorchDispatchMode):
    """Records every operator a call runs, with its tensors; replaying runs them again on the same tensors and writes each
    result into the tensor the recording produced: a CUDA graph's semantics (fixed memory, Python not run again) on CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append((func, args, kwargs or {}, out))
        return out

    @torch.no_grad()
    def replay(self) -> None:
        for func, args, kwargs, out in self.ops:
            new = func(*args, **kwargs)
            olds, news = (out, new) if isinstance(out, (tuple, list)) else ((out,), (new,))
            for old, fresh in zip(olds, news):
                if isinstance(old, torch.Tensor) and old is not fresh:
                    old.copy_(fresh)


class _FakeGraph:
    """A CUDA graph stand-in: the capture ran the step once for real, so the first replay is that run."""

    def __init__(self) -> None:
        self.tape, self.replays = _Tape(), 0

    def replay(self) -> None:
        self.replays += 1
        if self.replays > 1:
            self.tape.replay()


@pytest.fixture
def fake_cuda(monkeypatch):
    """CPU tensors treated as capturable, CUDA's stream and graph calls replaced by the tape."""
    import contextlib

    import advpnml.accel.graphs as graphs

    class Stream:
        def wait_stream(self, other):
            pass

    @contextlib.contextmanager
    def capture(graph):
        with graph.tape:
            yield

    graphs_made: list[_FakeGraph] = []
    monkeypatch.setattr(graphs, "_capturable", lambda tensor: True)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: Stream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: graphs_made.append(_FakeGraph()) or graphs_made[-1])
    monkeypatch.setattr(torch.cuda, "graph", capture)
    return graphs_made


def test_a_replayed_step_reads_new_inputs_and_keys_recapture(fake_cuda):
    step = GraphedStep(lambda a, b: a * 2 + b, warmup=2, max_captures=2)
    calls = [(torch.full((3,), float(i)), torch.ones(3), "k1" if i < 5 else "k2") for i in range(8)]
    for a, b, key in calls:
        assert torch.equal(step(a, b, key=key), a * 2 + b)
    # two warm-up calls, a capture at the third, replays; the new key: one warm-up call, then its own capture
    assert step.captures == 2 and [g.replays for g in fake_cuda] == [3, 2] and step.reason is None
    assert torch.equal(step(torch.zeros(5), torch.ones(5), key="k2"), torch.ones(5)), "another shape runs eagerly"
    step(torch.ones(3), torch.ones(3), key="k3")  # a third key: warm-up
    step(torch.ones(3), torch.ones(3), key="k3")  # past max_captures: eager for good
    assert "keeps changing" in step.reason and not step.captured


def test_a_captured_and_replayed_training_step_gives_the_eager_weights(fake_cuda, mnist5k_test):
    """PGD steps, then adaptive steps through the defense, replayed from the tape: weight for weight the eager update."""
    from advpnml.training.step import update_step

    x_all, y_all = mnist5k_test.x[:50], mnist5k_test.y[:50]
    torch.manual_seed(0)
    model = advpnml.create_model("madry_cnn", width=0.25)
    reference = copy.deepcopy(model)
    sgd = dict(lr=0.01, momentum=0.9, weight_decay=1e-4)
    optimizer, ref_optimizer = torch.optim.SGD(model.parameters(), **sgd), torch.optim.SGD(reference.parameters(), **sgd)
    step = GraphedPgdStep(model, model, optimizer, steps=3, step_size=0.1, refine_eps=0.1, bounds=(0.0, 1.0), log=print)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    for i in range(10):
        x, y, adaptive = x_all[5 * i : 5 * i + 5], y_all[5 * i : 5 * i + 5], i >= 6
        sums = step(x, y, 0.3, adaptive, seed=i).clone()
        target = AdversarialPnml(reference, 0.1, check_inputs=False) if adaptive else reference
        x_train = PGD(0.3, 3, 0.1, seed=i)(target, x, y)
        assert torch.equal(sums, update_step(reference, reference, ref_optimizer, scaler, x, y, x_train)), i
    # PGD: 3 warm-up calls, a capture (its first replay is the capture's own run), 2 replays from the tape; adaptive:
    # 1 warm-up call, a capture, 2 replays
    assert step.graph.captures == 2 and [g.replays for g in fake_cuda] == [3, 3]
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("through_defense", [False, True], ids=["base", "defense"])
def test_a_captured_and_replayed_attack_is_the_attack_on_every_new_batch(fake_cuda, tiny_cnn, mnist5k_test, through_defense):
    target = AdversarialPnml(tiny_cnn, 0.1, check_inputs=False, max_batch=40) if through_defense else tiny_cnn
    for attack in (PGD(0.3, 3, 0.05, seed=2), PGD(0.3, 3, 0.05, seed=2, keep_best=False), APGD(0.3, 5, seed=2)):
        graphed = GraphedAttack(attack)
        for i in range(5):  # 2 warm-up calls, the capture, 2 replays from the tape
            x, y = mnist5k_test.x[4 * i : 4 * i + 4], mnist5k_test.y[4 * i : 4 * i + 4]
            assert torch.equal(graphed(target, x, y), attack(target, x, y)), (attack, i)
        assert graphed.graph.captured and fake_cuda[-1].replays == 3
