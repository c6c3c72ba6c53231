"""Helpers for the course notebooks: parameters, live progress that survives in static HTML, interactivity.

A notebook run by papermill is saved with all its outputs and later converted to HTML for grading, so the
training progress is drawn as a PNG plot and a text line in display handles updated in place (not an
ipywidgets Output), and printing is throttled: papermill writes the whole notebook to disk on every output.
"""

from __future__ import annotations

import base64
import io
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import ipywidgets as widgets
from IPython.display import Image, display
from tqdm import tqdm

from .config import TrainConfig
from .device import pick_device
from .plots import loss_figure
from .rundir import RunDir, is_evidence
from .runlog import read_json, read_log_lines, read_metrics, step_line
from .sample import generate_text, load_model

NOTEBOOK_ONLY_PARAMETERS = {"progress_bar", "live_every_s"}
RESUMED = "Resumed from "  # how train.log begins each session after the first


def earlier_sessions(log: Path, metrics: Path, before_step: int | None = None) -> tuple[list[dict], list[str]]:
    """The metrics rows and log lines of a run's sessions so far, from its train.log and train_metrics.csv; with
    ``before_step``, of the sessions before the one that resumed at that step."""
    rows = read_metrics(metrics) if metrics.is_file() else []
    lines = read_log_lines(log)
    if before_step is not None:
        rows = [row for row in rows if row["step"] <= before_step]
        starts = [i for i, line in enumerate(lines) if line.startswith(RESUMED) and f" at step {before_step} " in line]
        lines = lines[: starts[-1]] if starts else []
    return rows, lines


def count_sessions(lines: list[str]) -> int:
    """How many sessions a run's log lines tell: the first, and one per resume."""
    return 1 + sum(line.startswith(RESUMED) for line in lines)


def show_earlier_sessions(out_dir: str | os.PathLike, target: float, resume: bool = True) -> int:
    """On resume, what the run's earlier sessions did before this one goes on: their loss curve and their log, from
    the run directory's train_metrics.csv and train.log, so that the saved notebook covers the run from step 1.
    Returns the number of earlier sessions (0: a fresh run, nothing shown)."""
    run = RunDir(out_dir)
    if not resume or not run.last.is_file():
        print("A fresh run: no earlier sessions to show.")
        return 0
    rows, lines = earlier_sessions(run.log, run.metrics)
    return display_sessions(rows, lines, target, f"{run.root}")


def display_sessions(rows: list[dict], lines: list[str], target: float, where: str) -> int:
    """Show earlier sessions' rows as a loss curve and their log lines; returns how many sessions they were."""
    sessions = count_sessions(lines)
    last = int(rows[-1]["step"]) if rows else 0
    print(
        f"Earlier sessions of this run: {sessions}, up to step {last:,} (from train_metrics.csv and train.log in "
        f"{where}); steps after the last checkpoint are trained again below."
    )
    if rows:
        show(loss_figure(rows, target, f"Earlier sessions: steps 1-{last:,}", size=(7, 3.5)))
    print("\n".join(lines))
    return sessions


def project_root() -> Path:
    """The folder holding nanogpt_lib/, notebooks/ and data/ (the library is installed with pip -e)."""
    return Path(__file__).resolve().parent.parent


def enter_project_root() -> None:
    """Make relative paths mean the same in JupyterLab (cwd notebooks/) and papermill (cwd: where it was called).

    With nanogpt_lib installed from this folder (``pip install -e .``), that is the project folder; otherwise
    the working directory stays as it is. Nothing is returned, so that the notebook's cell shows no folder of this
    machine in an executed notebook handed to others.
    """
    root = project_root()
    if (root / "notebooks").is_dir():
        os.chdir(root)


def is_interactive() -> bool:
    """True in a kernel started by a Jupyter server (JupyterLab, Notebook), False under papermill or a script."""
    try:
        import psutil

        commands = [" ".join(p.cmdline()).lower() for p in psutil.Process().parents()]
    except Exception:  # no psutil, or a parent we may not inspect: assume a headless run
        return False
    if any("papermill" in c for c in commands):
        return False
    return any("jupyter" in c and any(k in c for k in ("lab", "notebook", "server")) for c in commands)


def config_from_parameters(namespace: dict[str, Any], names_before: set[str]) -> TrainConfig:
    """A validated TrainConfig from the variables the parameters cell (and papermill's injected cell) defined.

    papermill only warns about a parameter name the notebook does not declare; a misspelt option would
    silently train with the default. This refuses any name that is not a training option.
    """
    defined = {
        k: v
        for k, v in namespace.items()
        if k not in names_before and not k.startswith("_") and not callable(v) and not isinstance(v, ModuleType)
    }
    values = {k: v for k, v in defined.items() if k not in NOTEBOOK_ONLY_PARAMETERS}
    cfg = TrainConfig.from_dict(values)
    cfg.validate()
    return cfg


EARLIER_TAG = "earlier-sessions"  # the tag of notebook 04's cell that shows the earlier sessions


def run_files(folder: Path) -> tuple[Path, Path, Path]:
    """train.log, train_metrics.csv and run_config.json of a run directory, or of its evidence in results/<run>/."""
    run = RunDir(folder)
    if is_evidence(folder):
        return folder / run.log.name, folder / run.metrics.name, folder / run.run_config.name
    return run.log, run.metrics, run.run_config


def add_earlier_sessions(nb: Any, folder: Path) -> bool:
    """Give an executed notebook 04 of a resumed run, saved by a version that did not show the earlier sessions, that
    cell after all: its outputs drawn now from the run's train.log and train_metrics.csv in ``folder`` (the sessions
    before the one the notebook ran), and a note that says so. False when there is nothing to add."""
    import nbformat

    cells = nb.cells
    if any(EARLIER_TAG in c.get("metadata", {}).get("tags", []) for c in cells):
        return False
    titles = [c.source if c.cell_type == "markdown" else "" for c in cells]
    at = next((i for i, title in enumerate(titles) if title.startswith("## Training")), None)
    log, metrics, config = run_files(folder)
    resumes = read_json(config).get("resumes", []) if config.is_file() else []
    if at is None or not resumes:
        return False
    before = resumes[-1]["step"]
    rows, lines = earlier_sessions(log, metrics, before_step=before)
    target = read_json(config).get("train_config", {}).get("target_loss", TrainConfig.target_loss)
    sessions = count_sessions(lines)
    head = f"Earlier sessions of this run: {sessions}, steps 1 to {before:,} (from train_metrics.csv and train.log).\n"
    outputs = [nbformat.v4.new_output("stream", name="stdout", text=head)]
    if rows:
        fig = loss_figure(rows, target, f"Earlier sessions: steps 1-{before:,}", size=(7, 3.5))
        png = base64.b64encode(figure_png(fig)).decode("ascii")
        outputs.append(nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"}))
    outputs.append(nbformat.v4.new_output("stream", name="stdout", text="\n".join(lines) + "\n"))
    note = (
        "## Earlier sessions\n"
        f"The {sessions} session(s) before the one this notebook ran (it resumed at step {before:,}): added to the "
        "saved notebook by `nanogpt html` from the run's `train_metrics.csv` and `train.log`, because the session ran "
        "a notebook 04 that did not show them yet. The code below was not executed in that session."
    )
    code = nbformat.v4.new_code_cell(
        "# added by nanogpt html from the run's train_metrics.csv and train.log; not executed in this session",
        outputs=outputs,
        metadata={"tags": [EARLIER_TAG]},
    )
    cells[at:at] = [nbformat.v4.new_markdown_cell(note), code]
    for i, cell in enumerate(cells):
        cell["id"] = str(i)
    return True


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


class LiveProgress:
    """Trainer callbacks that keep a loss plot and a status line up to date in a notebook.

    Both live in display handles (``display(..., display_id=True)``) updated in place, so the saved notebook
    and its HTML hold the final plot as a PNG and the last status as text. Step lines are printed at most
    every ``every_s`` seconds; events (new best, target reached, resume) are printed at once. A tqdm bar is
    added only when ``progress_bar`` is true (``None``: only in an interactive JupyterLab session).
    """

    def __init__(self, trainer, every_s: float = 30.0, progress_bar: bool | None = None):
        self.trainer = trainer
        self.every_s = every_s
        self.progress_bar = is_interactive() if progress_bar is None else progress_bar
        self.rows: list[dict] = []
        self.last_draw = -float("inf")
        self.last_line = ""
        self.bar = None
        for event in ("on_start", "on_message", "on_log", "on_end"):
            trainer.add_callback(event, getattr(self, event))

    def on_start(self, info: dict) -> None:
        self.info = info
        run = RunDir(self.trainer.cfg.out_dir)  # a resumed run's plot starts with its earlier sessions' rows
        if info["start_step"] and run.metrics.is_file():
            self.rows = [row for row in read_metrics(run.metrics) if row["step"] <= info["start_step"]]
        self.plot_handle = display(
            {"text/plain": "(the loss plot appears after the first log step)"}, raw=True, display_id=True
        )
        self.status_handle = display({"text/plain": "starting..."}, raw=True, display_id=True)
        if self.progress_bar:  # a text bar: a widget bar makes JupyterLab show the kernel as idle while it trains
            self.bar = tqdm(total=info["steps"], initial=info["start_step"], unit="step", file=sys.stdout)

    def on_message(self, line: str) -> None:
        if line != self.last_line:  # the line of the row just logged is shown by on_log, at most every every_s
            print(line, flush=True)

    def on_log(self, row: dict) -> None:
        self.rows.append(row)
        self.last_line = step_line(row, self.trainer.cfg.steps)
        if self.bar is not None:
            self.bar.update(row["step"] - self.bar.n)
        if time.monotonic() - self.last_draw >= self.every_s:
            self.draw()
            print(self.last_line, flush=True)

    def draw(self) -> None:
        self.last_draw = time.monotonic()
        cfg = self.trainer.cfg
        fig = loss_figure(self.rows, cfg.target_loss, f"{cfg.model} on {self.info['device']}", size=(7, 3.5))
        self.plot_handle.update(Image(data=figure_png(fig)))
        self.status_handle.update({"text/plain": self.last_line}, raw=True)

    def on_end(self, summary: dict) -> None:
        if self.rows:
            self.draw()
        if self.bar is not None:
            self.bar.close()


def show(fig) -> None:
    """Display a matplotlib figure as a PNG: it survives in the saved notebook and in static HTML."""

    display(Image(data=figure_png(fig)))


def playground(
    checkpoint_path: str | os.PathLike, prompt: str = TrainConfig.prompt, seed: int = TrainConfig.seed
) -> str:
    """Text from a checkpoint: a static sample always, and sliders to play with when run in JupyterLab; without
    the checkpoint, one line that says so (and "").

    The device is chosen as for training (``--device auto``); temperature and top-k start at the training
    defaults. Widgets are created only in an interactive session, so the saved notebook and its HTML carry the
    static sample instead of a widget that cannot render without a live kernel.
    """

    path = Path(checkpoint_path)
    if not path.is_file():  # a run directory kept without its checkpoints still gets its report
        print(f"No playground: checkpoint {path} not found (train first with notebook 04, or set checkpoint_path).")
        return ""
    device = pick_device("auto")
    model = load_model(str(path), device)
    temperature, top_k = TrainConfig.temperature, TrainConfig.top_k
    static = generate_text(model, prompt, 120, temperature=temperature, top_k=top_k, seed=seed)[0]
    print(f"A sample from {path} (prompt {prompt!r}, temperature {temperature}, top_k {top_k}, seed {seed}):\n")
    print(static)
    if not is_interactive():
        return static

    prompt_box = widgets.Textarea(value=prompt, description="prompt")
    temperature_slider = widgets.FloatSlider(value=temperature, min=0.1, max=2.0, step=0.05, description="temperature")
    top_k_slider = widgets.IntSlider(value=top_k, min=0, max=1000, step=10, description="top-k (0: off)")
    length = widgets.IntSlider(value=120, min=10, max=500, step=10, description="new tokens")
    button = widgets.Button(description="Generate")
    output = widgets.Output()

    def on_click(_button) -> None:
        with output:
            output.clear_output()
            text = generate_text(
                model, prompt_box.value, length.value, temperature_slider.value, top_k_slider.value, seed=seed
            )
            print(text[0])

    button.on_click(on_click)
    display(widgets.VBox([prompt_box, temperature_slider, top_k_slider, length, button, output]))
    return static
