"""The records file is repaired without loss: corrupt lines set aside, cut lines redone, empty files fresh, disk errors one line."""

from __future__ import annotations

import errno
import json
import os

import pytest

from advpnml.config import AttackSpec, EvalSettings
from advpnml.evaluation.engine import evaluate
from advpnml.runtime import Runtime

SPECS = [
    AttackSpec("FGSM", "fgsm", {}, base=True, defense="transfer"),
    AttackSpec("PGD", "pgd", {"steps": 2, "step_size": 0.05}, base=True, defense="transfer"),
]


def _settings() -> EvalSettings:
    return EvalSettings("mnist5k", "test", 8, 0.1, 0.1, SPECS, batch_size=2)


def _run(model, data, out, messages=None):
    return evaluate(
        model, data, _settings(), out, Runtime(log=(messages.append if messages is not None else lambda m: None), progress=False)
    )


def _preds(result):
    return [(r["index"], r["pred"]) for r in result.records]


def test_a_corrupt_line_is_set_aside_and_the_records_after_it_are_kept(standard_model, mnist5k_test, tmp_path):
    data = mnist5k_test.head(8)
    whole = _run(standard_model, data, tmp_path / "whole")
    path = tmp_path / "whole" / "records.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)  # header + 8 records
    garbage = "{not json: é\n".encode()  # non-ASCII: truncation by characters would cut the wrong byte
    damaged = [lines[0], lines[1], garbage, *lines[3:8], lines[8][:10]]  # record 1 lost, record 7 cut short
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "records.jsonl").write_bytes(b"".join(damaged))
    messages = []
    resumed = _run(standard_model, data, tmp_path / "part", messages)
    assert _preds(resumed) == _preds(whole), "the repaired run equals an uninterrupted one"
    indices = [json.loads(line)["index"] for line in (tmp_path / "part" / "records.jsonl").read_bytes().splitlines()[1:]]
    assert sorted(indices) == list(range(8)) and len(indices) == 8, "no record lost, none twice"
    assert (tmp_path / "part" / "records.jsonl.corrupt").read_bytes() == garbage
    assert any("1 unreadable line(s) moved" in m and "6 records kept" in m for m in messages)


def test_an_empty_or_headerless_file_is_a_fresh_start(standard_model, mnist5k_test, tmp_path):
    data = mnist5k_test.head(8)
    for name, content in (("empty", b""), ("cut-header", b'{"type": "hea')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "records.jsonl").write_bytes(content)
        assert len(_run(standard_model, data, tmp_path / name).records) == 8
    assert (tmp_path / "cut-header" / "records.jsonl.corrupt").read_bytes() == b'{"type": "hea\n'


def test_a_full_disk_is_one_line_and_leaves_nothing_that_blocks_a_rerun(standard_model, mnist5k_test, tmp_path, monkeypatch):
    import os

    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ValueError, match="No space left on device"):
        _run(standard_model, mnist5k_test.head(8), tmp_path)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not (tmp_path / "records.jsonl").exists() and not (tmp_path / "records.jsonl.tmp").exists()
    assert len(_run(standard_model, mnist5k_test.head(8), tmp_path).records) == 8


def test_a_different_model_or_data_under_the_same_path_is_refused_by_name(standard_model, mnist5k_test, tmp_path):
    import copy

    import torch

    _run(standard_model, mnist5k_test.head(8), tmp_path)
    other = copy.deepcopy(standard_model)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match="other content: the model's weights"):
        _run(other, mnist5k_test.head(8), tmp_path)
    shifted = type(mnist5k_test)(mnist5k_test.x[1:9], mnist5k_test.y[1:9], mnist5k_test.info)
    with pytest.raises(ValueError, match="other content: the data"):
        _run(standard_model, shifted, tmp_path)
    assert len(_run(standard_model, mnist5k_test.head(8), tmp_path).records) == 8, "the same content resumes"
    header = json.loads((tmp_path / "records.jsonl").read_text().splitlines()[0])
    assert set(header["identity"]) == {"model_sha256", "outputs", "architecture", "data_sha256", "advpnml", "torch"}


def test_a_run_resumed_complete_reports_no_nan_cost(standard_model, mnist5k_test, tmp_path):
    from advpnml.evaluation.reporting import summary_table, write_report

    first = _run(standard_model, mnist5k_test.head(8), tmp_path)
    again = _run(standard_model, mnist5k_test.head(8), tmp_path)
    assert (first.timed_samples, again.timed_samples) == (8, 0)
    assert "nan" not in summary_table(again) and "| - |" in summary_table(again)
    write_report(again, tmp_path)
    assert "0 of 8 samples evaluated" in (tmp_path / "results.md").read_text() and not (tmp_path / "results.md.tmp").exists()


@pytest.mark.parametrize(
    "line",
    [
        b'{"index": 3}\n',
        b'{"index": 3, "label": 1, "pred": {"base": {"Natural": "7"}}}\n',
        b'{"index": -1, "label": 1, "pred": {"base": {"Natural": 1}}}\n',
        b"[3]\n",
    ],
)
def test_a_readable_line_that_is_not_a_whole_record_is_set_aside_and_redone(standard_model, mnist5k_test, tmp_path, line):
    data = mnist5k_test.head(8)
    whole = _run(standard_model, data, tmp_path / "whole")
    lines = (tmp_path / "whole" / "records.jsonl").read_bytes().splitlines(keepends=True)
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "records.jsonl").write_bytes(b"".join([lines[0], *lines[1:4], line]))  # records 0-2, then the bad line
    for _ in range(2):  # it was taken as done, then a KeyError on every rerun
        assert _preds(_run(standard_model, data, tmp_path / "part")) == _preds(whole)
    assert (tmp_path / "part" / "records.jsonl.corrupt").read_bytes() == line


def test_figures_and_metrics_on_a_full_disk_are_one_line(tmp_path, monkeypatch):
    from advpnml.plotting import line_plot
    from advpnml.training.trainer import _write_metrics

    real_fsync, written = os.fsync, []

    def full_after(count):
        def fsync(fd):
            written.append(fd)
            if len(written) > count:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)

        return fsync

    monkeypatch.setattr(os, "fsync", full_after(0))
    with pytest.raises(ValueError, match=r"cannot write figure .*sweep.png: No space left on device"):
        line_plot([1, 2], {"base": [0.5, 0.4]}, tmp_path / "sweep", "eps", "accuracy", "title")
    history = [{"epoch": 1, "loss": 1.0, "train_clean_acc": 0.5, "train_adv_acc": 0.2}]
    with pytest.raises(ValueError, match=r"cannot write figure .*metrics.png: No space left on device"):
        _write_metrics(tmp_path, history)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"], "no half-written figure is left"
    (tmp_path / "sweep.pdf").write_bytes(b"%PDF of an earlier run")
    written.clear()
    monkeypatch.setattr(os, "fsync", full_after(1))  # the PNG is written, the disk fills on the PDF (its writer once
    with pytest.raises(ValueError, match=r"cannot write figure .*sweep.pdf: No space left on device"):  # said 'Stream')
        line_plot([1, 2], {"base": [0.5, 0.4]}, tmp_path / "sweep", "eps", "accuracy", "title")
    assert (tmp_path / "sweep.pdf").read_bytes() == b"%PDF of an earlier run", "the earlier PDF is kept whole"
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG" and not list(tmp_path.glob("*.tmp"))
