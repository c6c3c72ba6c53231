"""The text files of a run directory, each writer beside its reader: train.log, train_metrics.csv, samples.txt,
JSON files, phases.md. ``rundir.RunDir`` says where each one lives.

Every line and row is flushed as soon as it is written, so a run killed at any moment leaves readable
files; JSON files are replaced atomically. The readers skip what a killed run left half-written.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shlex
from pathlib import Path
from typing import Any

from .atomic import atomic_write

METRICS_COLUMNS = (
    "step",
    "loss",
    "lr",
    "grad_norm",
    "tokens_seen",
    "epoch",
    "tok_per_s",
    "elapsed_s",
    "corpus_loss",
)
SAMPLE_SEPARATOR = "-" * 72
_SAMPLE_HEADER = re.compile(r"^STEP: (\d+) \(sample (\d+)/(\d+)")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """``data`` as indented JSON, written atomically (numbers of numpy or torch as floats)."""
    text = json.dumps(data, indent=2, ensure_ascii=False, default=float) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def command_line(module: str, argv: list[str]) -> str:
    """``python -m module argv`` as committed files show it: an absolute path becomes relative to the working
    directory when it lies inside it, else its file name, so that no folder of this machine is shown."""

    def shown(arg: str) -> str:
        flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if not value.startswith("/"):
            return arg
        path = Path(value)
        value = str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else path.name
        return f"{flag}{eq}{value}"

    return shlex.join(["python", "-m", module, *map(shown, argv)])


def duration(seconds: float | None, short: bool = False) -> str:
    """A duration for people: seconds under two minutes, minutes under two hours, then hours, with the seconds beside
    (``short``: without); "–" for None."""
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    exact = "" if short else f" ({seconds:,.0f} s)"
    return f"{seconds / 60:.1f} min{exact}" if seconds < 7200 else f"{seconds / 3600:.1f} h{exact}"


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_log_lines(path: Path) -> list[str]:
    """The lines of train.log (none if it does not exist)."""
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


class TextLog:
    """Append-only human log (logs/train.log)."""

    def __init__(self, path: Path):
        self.path = path
        complete = _ends_with(path, b"\n")
        self.fh = open(path, "a", encoding="utf-8")
        if not complete:  # a run killed mid-line: start on a fresh line
            self.write("")

    def write(self, line: str) -> None:
        self.fh.write(line + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def step_line(row: dict[str, Any], steps: int) -> str:
    """The line of train.log for one metrics row (the notebooks' status line is the same)."""
    rate = row.get("tok_per_s")
    rate = "n/a (warm-up)" if rate is None or math.isnan(rate) else f"{rate:.1f}"
    return (
        f"step {row['step']}/{steps} | loss {row['loss']:.6f} | lr {row['lr']:.2e} | tok/s {rate} | "
        f"elapsed {row['elapsed_s']:.1f}s"
    )


class MetricsCSV:
    """logs/train_metrics.csv, one row per log step; rows past ``keep_until_step`` are dropped on opening."""

    def __init__(self, path: Path, keep_until_step: int):
        self.path = path
        self.dropped: list[dict[str, str]] = []  # rows of a killed run's last steps, redone by this one
        if path.exists():
            self._truncate_after(keep_until_step)
        new = not path.exists() or path.stat().st_size == 0
        self.fh = open(path, "a", encoding="utf-8", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=METRICS_COLUMNS)
        if new:
            self.writer.writeheader()
            self.fh.flush()

    def _truncate_after(self, step: int) -> None:
        """Drop rows a killed run wrote after its last checkpoint: the resumed run writes them again."""
        with open(self.path, encoding="utf-8", newline="") as fh:
            rows = [row for row in csv.DictReader(fh) if (row.get("step") or "").isdigit()]
        self.dropped = [row for row in rows if int(row["step"]) > step]
        rows = [row for row in rows if int(row["step"]) <= step]

        def write(out) -> None:
            text = _rows_to_csv(rows)
            out.write(text.encode("utf-8"))

        atomic_write(self.path, write)

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: _csv_value(row.get(k)) for k in METRICS_COLUMNS})
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def read_metrics(path: Path) -> list[dict[str, float | None]]:
    """The rows of train_metrics.csv with a step and a loss, as numbers (an empty cell is None)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                parsed = {k: float(v) if v not in ("", None) else None for k, v in row.items() if k is not None}
            except ValueError:
                continue  # the half-written last row of a killed run
            if parsed.get("step") is not None and parsed.get("loss") is not None:
                rows.append(parsed)
    return rows


def logged_past_summary(summary: dict[str, Any], last: dict[str, Any]) -> bool:
    """Whether a run's log went on past its summary.json: resumed after it stopped (interrupted, out of steps or
    diverged, all resumable), and training or cut off since. A run at the target ends there."""
    return summary.get("status") != "target_reached" and int(last.get("step") or 0) > int(summary.get("steps") or 0)


def from_log(summary: dict[str, Any], last: dict[str, Any]) -> bool:
    """Whether where a run stands comes from its last logged row (no summary yet, or the log went on past it)."""
    return "steps" not in summary or logged_past_summary(summary, last)


def progress(summary: dict[str, Any], last: dict[str, Any]) -> tuple[int, float | None, float | None]:
    """Steps, tokens and wall time of a run, all from one source: its summary.json, or its last logged row when the
    log went on past the summary (or there is no summary)."""
    if from_log(summary, last):
        return int(last.get("step") or 0), last.get("tokens_seen"), last.get("elapsed_s")
    return int(summary["steps"]), summary.get("tokens_seen"), summary.get("wall_time_s")


# summary.json's "stop" as summaries written before it was recorded would have said it: (what, the value's key)
OLDER_STOPS = {
    "full_corpus_loss": ("the full-corpus loss", "full_corpus_loss"),
    "step_loss": ("one step's loss", "target_step_loss"),
}


def stop_of(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The stop rule that ended a run, as summary.json records it (rule, status, value, what), or None."""
    if summary.get("stop"):
        return summary["stop"]
    if summary.get("stopped_by") in OLDER_STOPS:
        what, key = OLDER_STOPS[summary["stopped_by"]]
        return {"rule": summary["stopped_by"], "status": summary.get("status"), "value": summary.get(key), "what": what}
    return None


def cell(value: Any, spec: str = "") -> str:
    """A value as a table cell: formatted with ``spec``, or "–" when there is none."""
    return "–" if value is None else format(value, spec)


def _rows_to_csv(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def _ends_with(path: Path, suffix: bytes) -> bool:
    """True for a missing or empty file, or one whose last bytes are ``suffix``."""
    if not path.exists() or path.stat().st_size == 0:
        return True
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - len(suffix)))
        return fh.read() == suffix


def append_samples(path: Path, step: int, prompt: str, outputs: list[str], temperature: float, top_k: int) -> None:
    """Append STEP / PROMPT / OUTPUT blocks to samples/samples.txt, one per generation."""
    complete = _ends_with(path, (SAMPLE_SEPARATOR + "\n").encode())
    with open(path, "a", encoding="utf-8") as fh:
        if not complete:  # close the block a killed run left half-written
            fh.write("\n" + SAMPLE_SEPARATOR + "\n")
        for i, text in enumerate(outputs, 1):
            fh.write(f"STEP: {step} (sample {i}/{len(outputs)}, temperature {temperature}, top_k {top_k})\n")
            fh.write(f"PROMPT:\n{prompt}\n")
            fh.write(f"OUTPUT:\n{text}\n")
            fh.write(SAMPLE_SEPARATOR + "\n")
        fh.flush()


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The STEP / PROMPT / OUTPUT blocks of samples.txt as dicts (step, prompt, output); none without the file."""
    return parse_samples(path.read_text(encoding="utf-8")) if path.is_file() else []


def parse_samples(text: str) -> list[dict[str, Any]]:
    """The STEP / PROMPT / OUTPUT blocks of a samples.txt text as dicts (step, prompt, output)."""
    samples = []
    for block in text.split(SAMPLE_SEPARATOR + "\n"):
        header, _, rest = block.partition("\n")
        match = _SAMPLE_HEADER.match(header)
        if not match or "OUTPUT:\n" not in rest:
            continue
        prompt, _, output = rest.partition("OUTPUT:\n")
        samples.append(
            {
                "step": int(match.group(1)),
                "prompt": prompt.removeprefix("PROMPT:\n").removesuffix("\n"),
                "output": output.removesuffix("\n"),
            }
        )
    return samples


PHASES_TITLE = "# Full-corpus loss at several phases"


def write_phase_table(path: Path, command: str, about: str, lines: list[str]) -> None:
    """phases.md: what was measured and how, then the table of ``python -m nanogpt_lib.evaluate --out``."""
    text = "\n".join(
        [
            PHASES_TITLE,
            "",
            f"Command: `{command}`",
            "",
            f"{about}. At phase p the windows start at token p of the corpus; phase 0 is the full-corpus loss of "
            f"the training loop.",
            "",
            *lines,
        ]
    )
    atomic_write(path, lambda fh: fh.write((text + "\n").encode("utf-8")))


def read_phase_table(path: Path) -> dict[int, float] | None:
    """{phase: loss} from phases.md (None when there is no such file or no table in it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    losses = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0].isdigit():
            losses[int(cells[0])] = float(cells[2])
    return losses or None
