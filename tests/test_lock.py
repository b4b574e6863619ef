"""One writer per output folder: a live holder refuses a second job (``--overwrite`` included); a dead, reused or
malformed holder is taken over at once, by exactly one of several jobs racing for it."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from advpnml.config import AttackSpec, EvalSettings
from advpnml.evaluation.engine import evaluate
from advpnml.evaluation.lock import LOCK_NAME, FolderLock, holder_is_alive, process_start
from advpnml.runtime import QUIET, Runtime

HOST = socket.gethostname()


def _settings(n: int) -> EvalSettings:
    return EvalSettings("mnist5k", "test", n, 0.1, 0.1, [AttackSpec("FGSM", "fgsm", {}, True, "transfer")], batch_size=2)


def _write_lock(folder, pid, start=None, raw: bytes | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": HOST, "started": "then", **({"start": start} if start else {})}
    (folder / LOCK_NAME).write_bytes(raw if raw is not None else (json.dumps(holder) + "\n").encode())


@pytest.fixture
def live_python():
    """A live Python process that is not this one (the holder of a lock)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def gone_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_a_folder_held_by_a_live_job_is_refused_even_with_overwrite(standard_model, mnist5k_test, tmp_path, live_python):
    _write_lock(tmp_path, live_python.pid, process_start(live_python.pid))
    for resume in (True, False):
        with pytest.raises(ValueError, match=f"in use by pid {live_python.pid}"):
            evaluate(standard_model, mnist5k_test.head(2), _settings(2), tmp_path, QUIET, resume=resume)
    assert not (tmp_path / "records.jsonl").exists(), "nothing written while another job holds the folder"
    _write_lock(tmp_path, live_python.pid)  # a lock of an older version, without the start time: a live Python is a holder
    with pytest.raises(ValueError, match="in use by pid"):
        FolderLock(tmp_path).__enter__()


def test_a_dead_holder_is_taken_over_and_the_lock_is_released(standard_model, mnist5k_test, tmp_path, gone_pid):
    _write_lock(tmp_path, gone_pid)
    messages = []
    evaluate(standard_model, mnist5k_test.head(2), _settings(2), tmp_path, Runtime(log=messages.append, progress=False))
    assert (tmp_path / "records.jsonl").exists() and not (tmp_path / LOCK_NAME).exists()
    assert any(f"pid {gone_pid} is gone; taking it over" in m for m in messages)


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"", "unreadable"),
        (b"\x00garbage{", "unreadable"),
        (b"null", "unreadable"),
        (b"[1, 2]", "unreadable"),
        (b"42", "unreadable"),
        (json.dumps({"pid": 2**70, "host": HOST}).encode(), "no valid pid"),
        (json.dumps({"pid": "123", "host": HOST}).encode(), "no valid pid"),
        (json.dumps({"host": HOST}).encode(), "no valid pid"),
    ],
)
def test_a_malformed_lock_is_taken_over_at_once(tmp_path, raw, why):
    _write_lock(tmp_path, 0, raw=raw)
    (tmp_path / LOCK_NAME).touch()  # just written: an empty lock used to block reruns for 10 s
    messages, start = [], time.monotonic()
    with FolderLock(tmp_path, messages.append):
        held = json.loads((tmp_path / LOCK_NAME).read_text())
    assert held["pid"] == os.getpid() and held["start"] == process_start(os.getpid())
    assert time.monotonic() - start < 2 and any(why in m and "taking it over" in m for m in messages)
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_reused_pid_or_another_program_is_not_the_holder(tmp_path, live_python):
    reused = {"pid": live_python.pid, "host": HOST, "start": "another-boot:1"}
    assert holder_is_alive(reused, HOST) == (False, f"pid {live_python.pid} is now another process (started later)")
    assert holder_is_alive({**reused, "start": process_start(live_python.pid)}, HOST) == (True, "")
    assert holder_is_alive({**reused, "host": "elsewhere"}, HOST) == (True, ""), "another machine's process cannot be judged"
    sleeper = subprocess.Popen(["sleep", "3600"])
    try:
        _write_lock(tmp_path, sleeper.pid)  # no start time recorded, and the pid runs `sleep`, not a Python job
        messages = []
        with FolderLock(tmp_path, messages.append):
            pass
        assert any(f"pid {sleeper.pid} runs another program" in m for m in messages)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_same_process_nests_and_a_second_holder_waits_its_turn(tmp_path):
    with FolderLock(tmp_path):
        with FolderLock(tmp_path):
            assert (tmp_path / LOCK_NAME).exists()
        assert (tmp_path / LOCK_NAME).exists(), "the outer hold is still on"
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_full_disk_while_locking_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ValueError, match="cannot lock .*No space left on device"):
        FolderLock(tmp_path).__enter__()
    assert list(tmp_path.iterdir()) == []


def test_a_lock_path_that_is_a_directory_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / LOCK_NAME).mkdir()
    with pytest.raises(ValueError, match=rf"{LOCK_NAME} is a directory, not a lock file; remove it or use another --out$"):
        FolderLock(tmp_path).__enter__()
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME], "no temporary file is left"


def _race(folder, barrier, results) -> None:
    """One contender of a round: take the lock, and while holding it claim a marker no other holder may hold."""
    barrier.wait()
    try:
        with FolderLock(folder, lambda m: None):
            try:
                fd = os.open(folder / "marker", os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                results.put("both")
                return
            time.sleep(0.05)
            os.close(fd)
            os.unlink(folder / "marker")
            results.put("held")
    except ValueError:
        results.put("refused")


def test_two_jobs_taking_over_a_dead_holder_at_the_same_instant_never_both_hold_it(tmp_path, gone_pid):
    context = multiprocessing.get_context("fork")
    outcomes = []
    for round_ in range(60):
        folder = tmp_path / str(round_)
        _write_lock(folder, gone_pid)
        barrier, results = context.Barrier(2), context.Queue()
        procs = [context.Process(target=_race, args=(folder, barrier, results)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        assert [p.exitcode for p in procs] == [0, 0]
        outcomes += [results.get() for _ in procs]  # each put its outcome before it exited
    assert "both" not in outcomes and outcomes.count("held") >= 60, outcomes


def test_a_takeover_guard_left_by_a_dead_job_expires(tmp_path, gone_pid):
    _write_lock(tmp_path, gone_pid)
    guard = tmp_path / (LOCK_NAME + ".takeover")
    guard.touch()
    os.utime(guard, (time.time() - 60, time.time() - 60))
    with FolderLock(tmp_path, lambda m: None):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not guard.exists()
