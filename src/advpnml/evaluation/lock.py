"""One writer per output folder: a job holds ``<out>/.advpnml.lock`` (its pid, host and start time) while it writes.

Two evaluations into one ``--out`` would interleave their records, and ``--overwrite`` under a running job
would let the old job append into the new file; the second job is refused instead, naming the holder.

A lock appears whole or not at all (written to a temporary file, then hard-linked into place), so an empty,
unreadable or malformed lock file is never a job in progress: it is taken over at once with a warning. A lock
whose holder is gone is taken over too: its pid no longer runs on this host, or runs another process (the lock
records the holder's start time, so a reused pid is told apart; a lock without one whose pid runs a program
that is not Python is another program's). A takeover happens under a second file held exclusively, and only if
the lock still holds what was judged dead, so two jobs taking over at the same instant cannot both hold it.
"""

from __future__ import annotations

import json
import os
import reprlib
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

LOCK_NAME = ".advpnml.lock"
#: a takeover guard older than this was left by a process that died in the middle of a takeover
_STALE_GUARD_SECONDS = 10.0
_ATTEMPTS = 200


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux: boot id and clock ticks since boot), or None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError, OverflowError):
        return None
    # the command name (field 2) may hold spaces and parentheses: count the fields after its closing ")"
    fields = stat[stat.rindex(")") + 2 :].split()
    return f"{_boot_id()}:{fields[19]}" if len(fields) > 19 else None


def _runs_python(pid: int) -> bool | None:
    """Whether ``pid``'s command line names Python or advpnml (None: unreadable, e.g. not Linux)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").lower()
    except OSError:
        return None
    return any(word in cmdline for word in (b"python", b"advpnml", b"torchrun", b"pytest"))


def holder_is_alive(holder: Any, host: str) -> tuple[bool, str]:
    """Whether the job a lock names may still run, and why not when it is gone (a malformed lock is gone)."""
    if not isinstance(holder, dict):
        return False, f"the lock is unreadable ({reprlib.repr(holder)})"
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2**31:
        return False, f"the lock names no valid pid ({pid!r})"
    if holder.get("host") != host:
        return True, ""  # another machine's process: this one cannot tell
    if pid == os.getpid():
        return False, f"pid {pid} is this process, which does not hold it"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, f"pid {pid} is gone"
    except PermissionError:
        pass  # another user's live process
    except (OverflowError, ValueError, OSError):
        return False, f"pid {pid} is not a process"
    started = process_start(pid)
    if holder.get("start") is not None and started is not None and started != holder["start"]:
        return False, f"pid {pid} is now another process (started later)"
    if holder.get("start") is None and _runs_python(pid) is False:
        return False, f"pid {pid} runs another program"
    return True, ""


def hold(folder: str | os.PathLike | None, log: Callable[[str], None] = print) -> AbstractContextManager:
    """``with hold(out):`` the folder's lock, or nothing when there is no folder (``None``: an in-memory run, or a
    torchrun rank other than 0, whose rank 0 holds it for the job)."""
    return nullcontext() if folder is None else FolderLock(folder, log)


class FolderLock:
    """``with FolderLock(out):`` holds ``out`` for this process; re-entering in the same process nests."""

    _held: dict[str, int] = {}

    def __init__(self, folder: str | os.PathLike, log: Callable[[str], None] = print) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.log = log
        self._mine = b""

    def __enter__(self) -> FolderLock:
        key = str(self.path.resolve())
        if key in self._held:
            self._held[key] += 1
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot create {self.path.parent}: {err.strerror or err}") from None
        if self.path.exists() and not self.path.is_file():
            kind = "a directory" if self.path.is_dir() else "not a regular file"
            raise ValueError(f"{self.path} is {kind}, not a lock file; remove it or use another --out")
        host = socket.gethostname()
        self._mine = (
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": host,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "start": process_start(os.getpid()),
                }
            )
            + "\n"
        ).encode()
        for _ in range(_ATTEMPTS):
            if self._create():
                break
            seen = self._read()
            if seen is None:
                continue  # released between our two looks: try to create it again
            holder = _parse(seen)
            alive, why = holder_is_alive(holder, host)
            if alive:
                raise ValueError(
                    f"{self.path.parent} is in use by pid {holder.get('pid')} on {holder.get('host')} since "
                    f"{holder.get('started')}; wait for that job or use another --out "
                    f"(delete {self.path} if you know it is dead)"
                )
            if self._take_over(seen):
                self.log(f"warning: {self.path.parent} was locked, but {why}; taking it over")
                break
            time.sleep(0.01)
        else:
            raise ValueError(f"could not lock {self.path.parent}: other jobs kept taking it over; try again")
        self._held[key] = 1
        return self

    def __exit__(self, *exc: Any) -> None:
        key = str(self.path.resolve())
        self._held[key] -= 1
        if self._held[key] == 0:
            del self._held[key]
            if self._read() == self._mine:  # never remove a lock that is not ours
                self.path.unlink(missing_ok=True)

    def _write_temp(self) -> Path:
        tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(self._mine)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise ValueError(f"cannot lock {self.path.parent}: writing {tmp.name} failed: {err.strerror or err}") from None
        return tmp

    def _create(self) -> bool:
        """Put our lock in place if there is none: whole, in one step (a hard link fails if the name exists)."""
        tmp = self._write_temp()
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, then write (not atomic, still exclusive)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(self._mine)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, seen: bytes) -> bool:
        """Replace a dead holder's lock by ours, under an exclusive guard, only if it still holds ``seen``."""
        guard = self.path.with_name(LOCK_NAME + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > _STALE_GUARD_SECONDS:
                    guard.unlink(missing_ok=True)
            except OSError:
                pass
            return False
        except OSError as err:
            raise ValueError(f"cannot lock {self.path.parent}: {err.strerror or err}") from None
        os.close(fd)
        try:
            if self._read() != seen:
                return False  # someone took it over or released it meanwhile: judge again
            tmp = self._write_temp()
            try:
                os.replace(tmp, self.path)
            except OSError as err:
                tmp.unlink(missing_ok=True)
                raise ValueError(f"cannot lock {self.path.parent}: replacing {self.path.name}: {err.strerror or err}") from None
            return True
        finally:
            guard.unlink(missing_ok=True)

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return b""


def _parse(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")
