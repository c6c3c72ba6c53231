"""The run directory: every path of its layout, spelt here once, and what the rest of the project does with it.

    <out_dir>/
    ├─ checkpoints/last.pt      resume state: weights, optimizer, data position, RNG, loop state
    ├─ checkpoints/best.pt      weights only, at the best mean loss so far
    ├─ logs/train.log           every line the run printed
    ├─ logs/train_metrics.csv   one row per log step (runlog.METRICS_COLUMNS)
    ├─ logs/loss_curve.png      drawn by the report
    ├─ samples/samples.txt      STEP / PROMPT / OUTPUT blocks
    ├─ html/                    the executed notebooks as HTML (make html)
    ├─ summary.json             final numbers: status, steps, tokens, times, losses
    ├─ phases.md                the full-corpus loss at several phases (python -m nanogpt_lib.evaluate --out)
    └─ run_config.json          options, model, device, versions, commit, resumes

The training loop writes it (``prepare`` for a fresh or resumed run, then the writers of ``runlog``); the report
and the notebooks read it (``read_*``). The file formats live in ``runlog``, each writer beside its reader.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from . import runlog
from .errors import UserError

CHECKPOINTS, LOGS, SAMPLES, HTML = "checkpoints", "logs", "samples", "html"


class RunDir:
    """One run directory: its paths, setting it up for a run, and reading what a run left in it."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.last = self.root / CHECKPOINTS / "last.pt"
        self.best = self.root / CHECKPOINTS / "best.pt"
        self.log = self.root / LOGS / "train.log"
        self.metrics = self.root / LOGS / "train_metrics.csv"
        self.loss_curve = self.root / LOGS / "loss_curve.png"
        self.samples = self.root / SAMPLES / "samples.txt"
        self.html = self.root / HTML
        self.summary = self.root / "summary.json"
        self.phases = self.root / "phases.md"
        self.run_config = self.root / "run_config.json"

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
                for target in (self.root / CHECKPOINTS, self.root / LOGS, self.root / SAMPLES, self.summary,
                               self.run_config, self.phases):  # fmt: skip
                    if target.is_dir():
                        shutil.rmtree(target)
                    elif target.exists():
                        target.unlink()
            for sub in (LOGS, SAMPLES, CHECKPOINTS):
                (self.root / sub).mkdir(exist_ok=True)
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
        """The files worth keeping with the results, with their names there: logs, metrics, samples, summary, run
        config, the phase table, and the executed notebooks (papermill's output) and their HTML where the directory
        holds them."""
        files = {
            path: path.name
            for path in (self.metrics, self.log, self.samples, self.summary, self.run_config, self.phases)
        }
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
