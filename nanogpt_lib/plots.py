"""The project's plots: the loss curve, as a matplotlib figure (the notebooks' live plot) and as a PNG of a run
(the report's, the export's)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from .atomic import atomic_write

if TYPE_CHECKING:
    from .rundir import Run


def loss_figure(rows: list[dict], target: float, title: str, size: tuple[float, float] = (8, 4.5)):
    """Step loss (log scale) against steps from metrics rows, with the target line and any full-corpus losses.

    The report's PNG, the export's and the notebooks' live plot all draw this figure.
    """
    fig = Figure(figsize=size, dpi=120)
    ax = fig.subplots()
    ax.plot(
        [r["step"] for r in rows],
        [r["loss"] for r in rows],
        lw=1.2,
        color="tab:blue",
        label="training loss (step mean)",
    )
    corpus = [(r["step"], r["corpus_loss"]) for r in rows if r.get("corpus_loss") is not None]
    if corpus:
        ax.plot(*zip(*corpus, strict=True), "o", color="tab:green", ms=5, label="full-corpus loss")
    ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"target {target}")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def plot_loss_curve(run: Run, path: str | os.PathLike) -> Path:
    """A run's loss curve (report.load_run) as a PNG at ``path``; the same run gives the same bytes."""
    device = run.summary.get("device") or run.config.get("device_name", "")
    title = f"{run.config.get('train_config', {}).get('model', 'GPT')} on {device}".strip()
    fig = loss_figure(run.metrics, run.target_loss, title)
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", metadata={"Software": None}))
    return path
