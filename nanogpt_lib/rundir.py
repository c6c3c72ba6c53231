"""The run directory: every path of its layout, spelt here once, and what the rest of the project does with it.

    <out_dir>/
    ├─ checkpoints/last.pt      resume state: weights, optimizer, data position, RNG, loop state
    ├─ checkpoints/best.pt      weights only, at the best mean loss so far
    ├─ logs/train.log           every line the run printed
    ├─ logs/train_metrics.csv   one row per log step (runlog.METRICS_COLUMNS)
    ├─ logs/loss_curve.png      drawn by the report
    ├─ samples/samples.txt      STEP / PROMPT / OUTPUT blocks
    ├─ html/                    the executed notebooks as HTML (nanogpt html)
    ├─ summary.json             final numbers: status, steps, tokens, times, losses
    ├─ phases.md                the full-corpus loss at several phases (python -m nanogpt_lib.evaluate --out)
    └─ run_config.json          options, model, device, versions, commit, resumes

The training loop writes it (``prepare`` for a fresh or resumed run, then the writers of ``runlog``); the report
and the notebooks read it (``read_*``, or whole as a ``Run``: ``load_run``, and ``load_evidence`` for its copy in
results/<run>/). The file formats live in ``runlog``, each writer beside its reader.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runlog
from .errors import UserError

CHECKPOINTS, HTML = "checkpoints", "html"


@dataclass(frozen=True)
class RunFile:
    """One file of a run directory: the RunDir attribute that names it, where it lies, whether ``--overwrite``
    removes it, and whether it is evidence (copied into results/<run>/ under its file name)."""

    attr: str
    path: str
    replaced: bool = True
    evidence: bool = True


# Every file a run writes, declared once. Adding one: a row here, its writer and reader in runlog.
FILES = (
    RunFile("last", f"{CHECKPOINTS}/last.pt", evidence=False),
    RunFile("best", f"{CHECKPOINTS}/best.pt", evidence=False),
    RunFile("log", "logs/train.log"),
    RunFile("metrics", "logs/train_metrics.csv"),
    RunFile("loss_curve", "logs/loss_curve.png"),
    RunFile("samples", "samples/samples.txt"),
    RunFile("summary", "summary.json"),
    RunFile("phases", "phases.md"),
    RunFile("run_config", "run_config.json"),
)


# where phases.md measures the full-corpus loss: phase 0 (the loop's windows) and three cuts later in a window of 256
# (a window shorter than 193 tokens is measured at the quarters of its length instead)
PHASES = (0, 64, 128, 192)


def phases_for(seq_len: int) -> list[int]:
    """The phases a run with windows of ``seq_len`` tokens is measured at (``PHASES``, or the quarters of a shorter
    window)."""
    if seq_len > max(PHASES):
        return list(PHASES)
    return sorted({seq_len * quarter // 4 for quarter in range(4)})


def evidence_name(attr: str) -> str:
    """The name a run file has in results/<run>/ (its file name), by its RunDir attribute."""
    return Path(next(f.path for f in FILES if f.attr == attr)).name


def is_evidence(folder: Path) -> bool:
    """Whether ``folder`` is a run's evidence as results/<run>/ keeps it: its files side by side, no logs/ folder."""
    return (folder / evidence_name("log")).is_file() and not (folder / "logs").is_dir()


class RunDir:
    """One run directory: its paths (``FILES``, and ``html/`` for the notebooks as HTML), setting it up for a run,
    and reading what a run left in it."""

    last: Path
    best: Path
    log: Path
    metrics: Path
    loss_curve: Path
    samples: Path
    summary: Path
    phases: Path
    run_config: Path

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        for file in FILES:
            setattr(self, file.attr, self.root / file.path)
        self.html = self.root / HTML

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @classmethod
    def of_checkpoint(cls, checkpoint: str | os.PathLike) -> RunDir | None:
        """The run directory a checkpoint sits in (``<run>/checkpoints/best.pt``), or None for one outside a run."""
        folder = Path(checkpoint).resolve().parent
        return cls(folder.parent) if folder.name == CHECKPOINTS else None

    # ------------------------------------------------------------------ writing: set-up for a run

    def holds_run(self) -> bool:
        """Whether a run has written here (a checkpoint or its run_config.json)."""
        return self.last.exists() or self.run_config.exists()

    def prepare(self, replace: bool) -> None:
        """Create the directory and its folders for a run; with ``replace``, first delete an earlier run's files.

        Only the run's own files go (never the notebooks or HTML a user keeps beside them); a temporary file that a
        checkpoint write killed half-way left behind goes too.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if replace and self.holds_run():
                for file in FILES:
                    if file.replaced:
                        (self.root / file.path).unlink(missing_ok=True)
            for file in FILES:
                (self.root / file.path).parent.mkdir(exist_ok=True)
            for stale in (self.root / CHECKPOINTS).glob(".*.tmp"):
                stale.unlink()
        except OSError as err:
            raise UserError(f"cannot create the run directory {self.root}: {err.strerror or err}") from None

    def open_log(self) -> runlog.TextLog:
        return runlog.TextLog(self.log)

    def open_metrics(self, keep_until_step: int) -> runlog.MetricsCSV:
        return runlog.MetricsCSV(self.metrics, keep_until_step=keep_until_step)

    def append_samples(self, step: int, prompt: str, outputs: list[str], temperature: float, top_k: int) -> None:
        runlog.append_samples(self.samples, step, prompt, outputs, temperature, top_k)

    def write_summary(self, summary: dict[str, Any]) -> None:
        runlog.write_json(self.summary, summary)

    def write_run_config(self, config: dict[str, Any]) -> None:
        runlog.write_json(self.run_config, config)

    # ------------------------------------------------------------------ reading

    def read_metrics(self) -> list[dict[str, float | None]]:
        """The metrics rows, as numbers; a clear error when the run has not logged a row yet."""
        if not self.root.is_dir():
            raise UserError(f"run directory {self.root} not found")
        if not self.metrics.is_file():
            raise UserError(
                f"run directory {self.root} has no metrics ({self.metrics} is missing): has it trained yet?"
            )
        rows = runlog.read_metrics(self.metrics)
        if not rows:
            raise UserError(f"{self.metrics} holds no rows yet: nothing to report")
        return rows

    def read_summary(self) -> dict[str, Any]:
        """summary.json ({} while the run has not ended)."""
        return self._read_json(self.summary)

    def read_run_config(self) -> dict[str, Any]:
        """run_config.json ({} before a run started here)."""
        return self._read_json(self.run_config)

    def read_log_lines(self) -> list[str]:
        return runlog.read_log_lines(self.log)

    def read_samples(self) -> list[dict[str, Any]]:
        return runlog.read_samples(self.samples)

    def evidence(self) -> dict[Path, str]:
        """The files worth keeping with the results, with their names there: the evidence of ``FILES`` that exists,
        and the executed notebooks (papermill's output) and their HTML where the directory holds them."""
        files = {self.root / f.path: evidence_name(f.attr) for f in FILES if f.evidence}
        files = {path: name for path, name in files.items() if path.is_file()}
        for path in [*sorted(self.root.glob("*.ipynb")), *sorted(self.html.glob("*.html"))]:
            files[path] = path.name
        return files

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        if not path.is_file():
            return {}
        try:
            return runlog.read_json(path)
        except json.JSONDecodeError as err:
            raise UserError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None


class _Discard:
    """A log or metrics file that writes nothing."""

    dropped: list = []

    def write(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass


class QuietRunDir(RunDir):
    """The run directory as a process other than rank 0 sees it under torchrun: it reads, and every write does
    nothing, as rank 0 writes for the group."""

    def prepare(self, replace: bool) -> None:
        pass

    def open_log(self) -> runlog.TextLog:
        return _Discard()  # type: ignore[return-value]

    def open_metrics(self, keep_until_step: int) -> runlog.MetricsCSV:
        return _Discard()  # type: ignore[return-value]

    def append_samples(self, step: int, prompt: str, outputs: list[str], temperature: float, top_k: int) -> None:
        pass

    def write_summary(self, summary: dict[str, Any]) -> None:
        pass

    def write_run_config(self, config: dict[str, Any]) -> None:
        pass


@dataclass
class Run:
    """What a run directory holds, read as text and numbers."""

    out_dir: Path
    metrics: list[dict[str, float | None]]
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The run directory's name: its folder in results/ unless the report is given another."""
        return self.out_dir.resolve().name

    @property
    def target_loss(self) -> float:
        return float(
            self.summary.get("target_loss") or self.config.get("train_config", {}).get("target_loss", 0.099999)
        )


def load_run(out_dir: str | os.PathLike) -> Run:
    run_dir = RunDir(out_dir)
    return Run(
        out_dir=run_dir.root,
        metrics=run_dir.read_metrics(),
        summary=run_dir.read_summary(),
        config=run_dir.read_run_config(),
        log_lines=run_dir.read_log_lines(),
        samples=run_dir.read_samples(),
    )


def load_evidence(folder: str | os.PathLike) -> Run:
    """A run as its evidence in results/<name>/ holds it: the run directory (and its checkpoints) is not needed."""
    folder = Path(folder)
    path = lambda attr: folder / evidence_name(attr)  # noqa: E731
    try:
        metrics = runlog.read_metrics(path("metrics"))
        summary, config = runlog.read_json(path("summary")), runlog.read_json(path("run_config"))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the evidence in {folder}: {err}") from None
    if not metrics:
        raise UserError(f"{folder} holds no metrics rows")
    samples = runlog.read_samples(path("samples")) if path("samples").is_file() else []
    log = runlog.read_log_lines(path("log")) if path("log").is_file() else []
    return Run(out_dir=folder, metrics=metrics, summary=summary, config=config, log_lines=log, samples=samples)
