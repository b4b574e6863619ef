"""One writer per output folder: a live holder refuses a second job (``--overwrite`` included), a dead one is taken over."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from advpnml.config import AttackSpec, EvalSettings
from advpnml.evaluation import evaluate
from advpnml.lock import LOCK_NAME, FolderLock
from advpnml.runtime import QUIET, Runtime


def _settings(n: int) -> EvalSettings:
    return EvalSettings("mnist5k", "test", n, 0.1, 0.1, [AttackSpec("FGSM", "fgsm", {}, True, "transfer")], batch_size=2)


def _write_lock(folder, pid: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(f'{{"pid": {pid}, "host": "{socket.gethostname()}", "started": "then"}}\n')


def test_a_folder_held_by_a_live_job_is_refused_even_with_overwrite(standard_model, mnist5k_test, tmp_path):
    _write_lock(tmp_path, os.getppid())  # a live process that is not this one
    for resume in (True, False):
        with pytest.raises(ValueError, match=f"in use by pid {os.getppid()}"):
            evaluate(standard_model, mnist5k_test.head(2), _settings(2), tmp_path, QUIET, resume=resume)
    assert not (tmp_path / "records.jsonl").exists(), "nothing written while another job holds the folder"


def test_a_dead_holder_is_taken_over_and_the_lock_is_released(standard_model, mnist5k_test, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _write_lock(tmp_path, gone.pid)
    messages = []
    evaluate(standard_model, mnist5k_test.head(2), _settings(2), tmp_path, Runtime(log=messages.append, progress=False))
    assert (tmp_path / "records.jsonl").exists() and not (tmp_path / LOCK_NAME).exists()
    assert any("which is gone; taking it over" in m for m in messages)


def test_the_same_process_nests_and_a_second_holder_waits_its_turn(tmp_path):
    with FolderLock(tmp_path):
        with FolderLock(tmp_path):
            assert (tmp_path / LOCK_NAME).exists()
        assert (tmp_path / LOCK_NAME).exists(), "the outer hold is still on"
    assert not (tmp_path / LOCK_NAME).exists()
