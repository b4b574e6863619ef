"""Figures shared by the experiments: PNG for looking, PDF for papers, labelled axes and legends."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path_stem: Path) -> list[Path]:
    """Save ``fig`` as ``path_stem.png`` and ``.pdf``, close it, return both paths."""
    import matplotlib.pyplot as plt

    path_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [path_stem.with_suffix(".png"), path_stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def line_plot(x: Sequence[Any], series: dict[str, Sequence[float | None]], path_stem: Path, xlabel: str, ylabel: str,
              title: str, marker_x: float | None = None, log_x: bool = False, categorical: bool = False,
              scale: float = 100.0) -> list[Path]:
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
