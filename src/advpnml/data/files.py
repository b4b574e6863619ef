"""Locating dataset files on disk and fetching them when a network exists."""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import Iterable
from pathlib import Path


class DataFileError(FileNotFoundError, ValueError):
    """A dataset's files are missing or malformed; the message names the path expected. A ValueError too: bad data
    is bad input, caught with every other one-line error of the library."""


def find_file(data_dir: str | os.PathLike, subdirs: Iterable[str], names: Iterable[str]) -> Path | None:
    """First existing ``data_dir/subdir/name`` over the given layouts, or None."""
    root = Path(data_dir).expanduser()
    for subdir in subdirs:
        for name in names:
            candidate = root / subdir / name
            if candidate.is_file():
                return candidate
    return None


def download_file(url: str, target: Path) -> Path:
    """Download ``url`` to ``target`` (via a temporary file); a clear error when there is no network."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DataFileError(f"could not download {url} to {target}: {err}") from None
    os.replace(tmp, target)
    return target
