"""The overview of every run in ``results/``, drawn from the committed evidence alone: the README's RUNS block (the
verdict of each run to the target), COMMANDS (what ``nanogpt sanity`` and ``make test`` took on each kind of machine)
and COMPARISON (every run beside the runs of others, with the loss at several phases).

The report (``report.py``) redraws these blocks whenever it writes evidence; notebook 05 shows the comparison.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import runlog
from .errors import UserError
from .rundir import RunDir, evidence_name
from .runlog import cell, duration, logged_past_summary, progress, stop_of

if TYPE_CHECKING:
    from .report import Run

# results/others.csv beside the runs' folders: runs of the same task by others, each with its source (a row per run;
# the columns of the comparison table, then "source", a link or where the figures were read)
OTHERS_FILE = "others.csv"
OTHERS_COLUMNS = (
    "run",
    "hardware",
    "precision",
    "tokens_per_step",
    "steps",
    "tokens",
    "wall_time",
    "crossed",
    "source",
)
SANITY_PREFIX = "sanity-"  # results/sanity-<hardware>/: the evidence of a sanity run, not a run to the target
TESTS_PATTERN = "tests-*.xml"  # results/tests-<hardware>.xml: pytest's JUnit XML of `make test JUNIT=...`


def _crossed(summary: dict[str, Any], last: dict[str, Any]) -> str:
    """What ended the run and its value (as summary.json records the stop), or where a run stands that has not
    reached the target: its last logged loss (the mean of the steps since the row before), not one noisy step."""
    status, stop = summary.get("status"), stop_of(summary)
    logged = f"last logged loss {cell(last.get('loss'), '.4f')}"
    if logged_past_summary(summary, last):
        return f"not yet: resumed after its last stop, resumable ({logged})"
    if status == "target_reached" and not stop:
        return "stop rule its summary does not name"
    if status == "target_reached":
        value = stop["value"]
        return f"{stop['what'].removeprefix('the ')} ({value:.4f})" if isinstance(value, float) else stop["what"]
    if status in ("completed", "diverged") and stop:
        return f"not reached: stopped by {stop['what']} ({logged})"
    return {
        "interrupted": f"not yet: interrupted, resumable ({logged})",
        "completed": f"not reached in its steps ({logged})",
    }.get(status, "not yet: in progress")


def _verdict(summary: dict[str, Any], last: dict[str, Any]) -> str:
    crossed = _crossed(summary, last)
    return f"**target reached** by the {crossed}" if summary.get("status") == "target_reached" else crossed


def phases_cell(phases_file: Path) -> str:
    """The full-corpus loss at phase 0 and at the worst other phase of a run's phases.md (evaluate --out)."""
    losses = runlog.read_phase_table(phases_file)
    if losses is None:
        return "not measured" if not phases_file.is_file() else "not measured (the checkpoint is gone)"
    others = [(loss, phase) for phase, loss in losses.items() if phase != 0]
    worst = f" / {max(others)[0]:.4f} (phase {max(others)[1]})" if others else ""
    return f"{losses[0]:.4f}{worst}" if 0 in losses else worst.lstrip(" /")


def run_row(
    label: str, summary: dict[str, Any], config: dict[str, Any], last: dict[str, Any], phases_file: Path
) -> tuple[str, ...]:
    """One run as a row of the comparison table, from its summary.json, run_config.json, last metrics row and phase
    table."""
    batch = {**config.get("train_config", {}), **config.get("plan", {})}  # the micro-batch this machine took
    per_step = summary.get("tokens_per_step") or config.get("tokens_per_step")
    shape = (
        f"{batch['batch_size']}×{batch['seq_len']}×{batch['grad_accum']} = {cell(per_step, ',')}"
        if {"batch_size", "seq_len", "grad_accum"} <= set(batch)
        else cell(per_step, ",")
    )
    steps, tokens, seconds = progress(summary, last)
    amp = summary.get("amp") or config.get("amp") or "?"
    wall = duration(seconds)
    resumes = len(config.get("resumes", []))  # run_config.json records each resume as it starts
    if resumes:
        wall += f", {resumes} resume{'s' if resumes > 1 else ''}"
    return (
        label,
        summary.get("device") or config.get("device_name", "?"),
        "fp32" if amp == "off" else str(amp),
        shape,
        cell(steps, ","),
        f"{tokens / 1e6:.2f}M" if tokens else "–",
        wall,
        _crossed(summary, last),
        _first_step_below(summary, per_step),
        phases_cell(phases_file),
    )


def _first_step_below(summary: dict[str, Any], per_step: Any) -> str:
    """The first step whose own loss was below the target, and the tokens seen by then: the figure to set beside runs
    that stopped on the loss of a step."""
    step = summary.get("target_step")
    if not isinstance(step, int):
        return "–"
    return f"{step:,} ({step * per_step / 1e6:.2f}M tokens)" if isinstance(per_step, int) else f"{step:,}"


def project_runs(results: Path, exclude: str | None = None) -> list[tuple[str, ...]]:
    """Rows for this project's other runs: each folder of ``results`` that holds the evidence of a run (its
    summary.json, run_config.json and train_metrics.csv), the one named ``exclude`` left out, linked by folder."""
    rows = []
    for folder, summary, config, last in committed_runs(results):
        if folder.name != exclude:
            label = f"[{folder.name}](results/{folder.name}/)"
            rows.append(run_row(label, summary, config, last, folder / evidence_name("phases")))
    return rows


def committed_runs(results: Path, sanity: bool = False) -> list[tuple[Path, dict, dict, dict]]:
    """(folder, summary, run config, last metrics row) of each folder of ``results`` that holds the evidence of a run
    (its summary.json, run_config.json and train_metrics.csv): the runs to the target, or with ``sanity`` the
    sanity runs (folders named sanity-*)."""
    runs = []
    for folder in sorted(path.parent for path in results.glob("*/summary.json")):
        files = [folder / evidence_name(attr) for attr in ("summary", "run_config", "metrics")]
        if folder.name.startswith(SANITY_PREFIX) != sanity or not all(path.is_file() for path in files):
            continue
        try:
            summary, config = runlog.read_json(files[0]), runlog.read_json(files[1])
            metrics = runlog.read_metrics(files[2]) or [{}]
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read the evidence in {folder}: {err}") from None
        runs.append((folder, summary, config, metrics[-1]))
    return runs


def others_rows(results: Path) -> list[tuple[str, ...]]:
    """The runs of others in ``results``/others.csv as rows of the comparison table, the run linked to its source."""
    path = results / OTHERS_FILE
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    if rows and set(OTHERS_COLUMNS) - set(rows[0]):
        raise UserError(f"{path} lacks the column(s) {', '.join(sorted(set(OTHERS_COLUMNS) - set(rows[0])))}")
    out = []
    for row in rows:
        source = row["source"].strip()
        name = f"[{row['run']}]({source})" if source.startswith("https://") else f"{row['run']} ({source})"
        out.append((name, *(row[column] or "not stated" for column in OTHERS_COLUMNS[1:-1]), "the same", "–"))
    return out


def hardware_kind(device: str, amp: str) -> str:
    """Which of the README's three kinds of machine (``HARDWARE_KINDS``) a recorded device was, from its name and
    precision: ``--amp auto`` picks bf16 on a CPU only where it has bf16 matrix units (see device.machine_kind)."""
    if not device.startswith("CPU"):
        return "gpu"
    return "cpu-no-bf16" if "no bf16 units" in device or amp not in ("bf16", "auto") else "cpu-bf16"


HARDWARE_KINDS = {"cpu-no-bf16": "CPU without bf16 units", "cpu-bf16": "CPU with bf16 units", "gpu": "GPU"}


PHASE_HOLDS = 0.2  # a model whose worst phase is above this knows the text only where the windows were cut in training
HISTORY = "docs/history.md"  # where the runs that did not finish are told


def finished(summary: dict[str, Any], last: dict[str, Any]) -> bool:
    """Whether a run ended (at the target, after its steps, or diverged) and was not continued past that end."""
    return summary.get("status") in ("target_reached", "completed", "diverged") and not logged_past_summary(
        summary, last
    )


def _headline_verdict(summary: dict[str, Any], last: dict[str, Any], phases_file: Path) -> str:
    """The verdict of a finished run; one at the target whose model is above ``PHASE_HOLDS`` at another phase says
    that it reached the target at phase 0 only."""
    verdict = _verdict(summary, last)
    losses = runlog.read_phase_table(phases_file) or {}
    if summary.get("status") == "target_reached" and max(losses.values(), default=0.0) > PHASE_HOLDS:
        verdict = verdict.replace("**target reached**", "**target reached at phase 0 only**")
    return verdict


def runs_block(results: Path) -> str:
    """The verdict of each finished run in ``results``: what stopped it, at which loss, its loss wherever the text is
    cut, after how many steps, tokens and minutes, with links to its evidence and its executed notebooks as HTML; the
    runs that did not finish are named below the table, their story in ``HISTORY``."""
    lines = [
        "| run | hardware | verdict | full-corpus loss at phase 0 / at the worst other phase | steps | tokens "
        "| wall time | notebooks |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    unfinished = []
    for folder, summary, config, last in committed_runs(results):
        steps, tokens, seconds = progress(summary, last)
        if not finished(summary, last):
            unfinished.append(f"[{folder.name}](results/{folder.name}/) (stopped at step {steps:,}, before its end)")
            continue
        device = summary.get("device") or config.get("device_name", "?")
        amp = summary.get("amp") or config.get("amp", "?")
        sessions = len(config.get("resumes", [])) + 1  # notebook 04 shows the session that ran it
        html = [
            f"[{p.stem[:2]}{f' (one of {sessions} sessions)' if p.stem.startswith('04') and sessions > 1 else ''}]"
            f"(results/{folder.name}/{p.name})"
            for p in sorted(folder.glob("*.html"))
        ]
        phases = folder / evidence_name("phases")
        lines.append(
            f"| [{folder.name}](results/{folder.name}/) | {device}, {'fp32' if amp in ('off', None) else amp} "
            f"| {_headline_verdict(summary, last, phases)} | {phases_cell(phases)} | {cell(steps, ',')} "
            f"| {f'{tokens / 1e6:.2f}M' if tokens else '–'} | {duration(seconds)} | {' · '.join(html) or '–'} |"
        )
    if unfinished:
        lines.append(f"\nNot finished, so not in the table ([what they showed]({HISTORY})): {'; '.join(unfinished)}.")
    return "\n".join(lines)


def tests_record(path: Path) -> tuple[str, str]:
    """What pytest's JUnit XML says: the machine it ran on (the ``device`` property) and a cell with counts and time."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        raise UserError(f"{path} is not pytest's JUnit XML (no testsuite)")
    prop = suite.find("properties/property[@name='device']")
    total, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    counts = f"{total - skipped - failed} passed" + (f", {failed} failed" if failed else "")
    counts += f", {skipped} skipped" if skipped else ""
    text = f"pytest: {counts} in {duration(float(suite.get('time', 0)))} ([junit](results/{path.name}))"
    return (prop.get("value", "") if prop is not None else ""), text


def commands_block(results: Path) -> str:
    """The two first commands, ``nanogpt sanity`` and ``make test``, with what each took and printed on each kind of
    machine, from the sanity runs (results/sanity-*/) and the tests' JUnit XML (results/tests-*.xml) committed."""
    sanity: dict[str, str] = {}
    for folder, summary, config, last in committed_runs(results, sanity=True):
        kind = hardware_kind(summary.get("device") or config.get("device_name", ""), summary.get("amp", ""))
        steps, _, seconds = progress(summary, last)
        sanity[kind] = (
            f"{cell(steps, ',')} steps trained in {duration(seconds)}, last loss {cell(last.get('loss'), '.2f')} "
            f"([run](results/{folder.name}/))"
        )
    tests: dict[str, str] = {}
    for path in sorted(results.glob(TESTS_PATTERN)):
        device, text = tests_record(path)
        tests[hardware_kind(device, "bf16")] = text  # its device names its bf16 units or "no bf16 units"
    tests["gpu"] = "the tests run on the CPU"
    header = "| command | " + " | ".join(HARDWARE_KINDS.values()) + " |"
    rows = [
        ("`nanogpt sanity`", sanity),
        ("`make test`", tests),
    ]
    body = "\n".join(
        f"| {cmd} | " + " | ".join(cells.get(kind, "no committed run yet") for kind in HARDWARE_KINDS) + " |"
        for cmd, cells in rows
    )
    return f"{header}\n| --- | --- | --- | --- |\n{body}"


def comparison_block(results: Path, run: Run | None = None) -> str:
    """This project's runs in ``results`` (``run``, when given, first as "This run", from its run directory) beside
    the runs of others (``others_rows``: the course's reference run and the best runs of others, from their logs)."""
    ours = (
        [run_row("**This run**", run.summary, run.config, run.metrics[-1], RunDir(run.out_dir).phases)] if run else []
    )
    header = (
        "| run | hardware | precision | tokens/step | steps | tokens | wall time | what crossed the target "
        "| first step whose own loss was below the target | full-corpus loss at phase 0 / at the worst other phase |\n"
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- |"
    )
    runs = (*ours, *project_runs(results, exclude=run.name if run else None), *others_rows(results))
    rows = "\n".join("| " + " | ".join(row) + " |" for row in runs)
    return (
        f"{header}\n{rows}\n\nOnly this project's runs report the loss over the whole corpus; the others stopped on "
        f"the loss of one step (or a mean of steps), which a noisy batch can cross early: set their steps and tokens "
        f"beside the first step of ours whose own loss was below the target. The wall time of a resumed "
        f"run adds up the training loops of its sessions, steps redone after a resume included; starting each "
        f"session (loading the checkpoint) comes on top."
    )


# The README's overview, drawn from results/ alone (every run's evidence there), refreshed whenever evidence is written.
OVERVIEW_BLOCKS = {"RUNS": runs_block, "COMMANDS": commands_block, "COMPARISON": comparison_block}
