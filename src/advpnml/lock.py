"""One writer per output folder: a job holds ``<out>/.advpnml.lock`` (its pid, host and start time) while it writes.

Two evaluations into one ``--out`` would interleave their records, and ``--overwrite`` under a running job
would let the old job append into the new file; the second job is refused instead, naming the holder. A lock
left by a job that died (its pid gone on this host) is taken over with a warning.
"""
from __future__ import annotations

import json
import os
import socket
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Callable

LOCK_NAME = ".advpnml.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


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

    def __enter__(self) -> "FolderLock":
        key = str(self.path.resolve())
        if key in self._held:
            self._held[key] += 1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                dead = holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"])
                unwritten = "pid" not in holder and time.time() - self._mtime() > 10  # its writer died between create and write
                if dead or unwritten:
                    self.log(f"warning: {self.path.parent} was locked by pid {holder.get('pid')}, which is gone; taking it over")
                    self.path.unlink(missing_ok=True)
                    continue
                raise ValueError(f"{self.path.parent} is in use by pid {holder.get('pid')} on {holder.get('host')} since "
                                 f"{holder.get('started')}; wait for that job or use another --out "
                                 f"(delete {self.path} if you know it is dead)") from None
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me) + "\n")
            self._held[key] = 1
            return self
        raise ValueError(f"could not lock {self.path.parent}: another job took it over at the same moment")

    def __exit__(self, *exc) -> None:
        key = str(self.path.resolve())
        self._held[key] -= 1
        if self._held[key] == 0:
            del self._held[key]
            self.path.unlink(missing_ok=True)

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return time.time()

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
