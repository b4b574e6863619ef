"""Output files: figures shared by the experiments (PNG for looking, PDF for papers, labelled axes and legends), and
every results file written whole or not at all (:func:`write_atomic`)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes, what: str = "") -> None:
    """Write ``path`` whole or not at all (a temporary file, fsynced, renamed over it); a full disk is one line
    (``cannot write {what} {path}: ...``)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"cannot write {what + ' ' if what else ''}{path}: {err.strerror or err}") from None


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path_stem: Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 130) -> list[Path]:
    """Save ``fig`` as ``path_stem.png`` and ``.pdf`` (or ``formats``), close it, return the paths; a full disk or
    a read-only folder is one line naming the file (and leaves no half-written figure)."""
    import matplotlib.pyplot as plt

    paths = [path_stem.with_suffix(f".{fmt}") for fmt in formats]
    try:
        try:
            path_stem.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot write figure {paths[0]}: {err.strerror or err}") from None
        for path, fmt in zip(paths, formats):
            # rendered in memory, then written whole: a backend that meets a full disk half-way (the PDF writer)
            # raises its own errors and leaves half a file; a disk error here is one line and leaves none
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
            write_atomic(path, buffer.getvalue(), what="figure")
    finally:
        plt.close(fig)
    return paths


def line_plot(
    x: Sequence[Any],
    series: Mapping[str, Sequence[float | None]],
    path_stem: Path,
    xlabel: str,
    ylabel: str,
    title: str,
    marker_x: float | None = None,
    log_x: bool = False,
    categorical: bool = False,
    scale: float = 100.0,
) -> list[Path]:
    """One line per series (``None`` values skipped, values times ``scale``: fractions to percent by default);
    ``marker_x`` draws the paper's dotted reference line."""
    fig, ax = pyplot().subplots(figsize=(6, 4))
    positions = list(range(len(x))) if categorical else list(x)
    styles = ["o-", "s--", "^-", "v--", "D-", "x--"]
    for (name, values), style in zip(series.items(), styles * 3):
        points = [(p, scale * v) for p, v in zip(positions, values) if v is not None]
        if points:
            ax.plot(*zip(*points), style, label=name)
    if categorical:
        ax.set_xticks(positions, [str(v) for v in x])
    if marker_x is not None and not categorical:
        ax.axvline(marker_x, color="gray", linestyle=":", label="paper's setting")
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path_stem)
