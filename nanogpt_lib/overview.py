"""The overview of every run in ``results/``, drawn from the committed evidence alone: the README's HEADLINE (the
result in one sentence), START (what ``nanogpt sanity`` and ``nanogpt overnight`` take on each kind of machine), RUNS
(the verdict of each finished run), COMPARISON (every run beside the runs of others, with the loss at several phases)
and TESTS (what ``make test`` took).

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
    from .rundir import Run

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
    """Rows for this project's other finished runs: each folder of ``results`` that holds the evidence of a run (its
    summary.json, run_config.json and train_metrics.csv), the one named ``exclude`` left out, linked by folder."""
    rows = []
    for folder, summary, config, last in committed_runs(results):
        if folder.name != exclude and finished(summary, last):  # the unfinished ones: docs/history.md
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
EARLIER_TAG = "celltag_earlier-sessions"  # nbconvert's class for notebook 04's cell with the earlier sessions


def finished(summary: dict[str, Any], last: dict[str, Any]) -> bool:
    """Whether a run ended (at the target, after its steps, or diverged) and was not continued past that end."""
    return summary.get("status") in ("target_reached", "completed", "diverged") and not logged_past_summary(
        summary, last
    )


def _headline_verdict(summary: dict[str, Any], last: dict[str, Any], phases_file: Path) -> str:
    """The verdict of a finished run; one at the target whose model is above ``PHASE_HOLDS`` at another phase says
    that it reached the target at phase 0 only."""
    verdict = _verdict(summary, last)
    if summary.get("status") == "target_reached" and not holds_everywhere(phases_file):
        verdict = verdict.replace("**target reached**", "**target reached at phase 0 only**")
    return verdict


def holds_everywhere(phases_file: Path) -> bool:
    """Whether the model stays within ``PHASE_HOLDS`` wherever the text is cut (True where it was not measured)."""
    losses = runlog.read_phase_table(phases_file) or {}
    return max(losses.values(), default=0.0) <= PHASE_HOLDS


def page_label(page: Path, sessions: int) -> str:
    """A notebook's HTML as the RUNS table links it: notebook 04 of a resumed run says whether it shows every session
    (its earlier-sessions cell) or only the last."""
    if not page.stem.startswith("04") or sessions == 1:
        return page.stem[:2]
    whole = EARLIER_TAG in page.read_text(encoding="utf-8", errors="replace")
    return f"04 ({f'all {sessions} sessions' if whole else f'the last of {sessions} sessions'})"


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
        sessions = len(config.get("resumes", [])) + 1
        html = [f"[{page_label(p, sessions)}](results/{folder.name}/{p.name})" for p in sorted(folder.glob("*.html"))]
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


def sanity_cells(results: Path) -> dict[str, str]:
    """What ``nanogpt sanity`` took on each kind of machine (``HARDWARE_KINDS``), from results/sanity-*/."""
    cells = {}
    for folder, summary, config, last in committed_runs(results, sanity=True):
        kind = hardware_kind(summary.get("device") or config.get("device_name", ""), summary.get("amp", ""))
        steps, _, seconds = progress(summary, last)
        cells[kind] = f"{cell(steps, ',')} steps in {duration(seconds, short=True)} ([run](results/{folder.name}/))"
    return cells


def clean_runs(results: Path) -> list[tuple[Path, dict, dict, dict]]:
    """The finished runs at the target whose model holds it wherever the text is cut (or was not measured there)."""
    return [
        (folder, summary, config, last)
        for folder, summary, config, last in committed_runs(results)
        if finished(summary, last)
        and summary.get("status") == "target_reached"
        and holds_everywhere(folder / evidence_name("phases"))
    ]


def _kind(summary: dict[str, Any], config: dict[str, Any]) -> str:
    return hardware_kind(summary.get("device") or config.get("device_name", ""), summary.get("amp") or "")


def overnight_cell(results: Path, kind: str) -> str:
    """The time ``nanogpt overnight`` takes to the target on a kind of machine: its recipe's committed run where that
    ran on such a machine, else that run's tokens at the rate of a finished run that did (an estimate, said so)."""
    from .recipes import for_device  # the recipes name their committed runs

    recipe = Path(for_device("cuda" if kind == "gpu" else "cpu").evidence).name
    runs = {folder.name: (summary, config, last) for folder, summary, config, last in committed_runs(results)}
    if recipe not in runs or runs[recipe][0].get("status") != "target_reached":
        return "no committed run of its recipe at the target yet"
    summary, config, last = runs[recipe]
    steps, needed, seconds = progress(summary, last)
    link = f"[{recipe}](results/{recipe}/)"
    if _kind(summary, config) == kind:
        where = f" on an {summary.get('device')}" if kind == "gpu" else ""
        return f"{duration(seconds, short=True)}{where} ({link})"
    for name, (other, other_config, other_last) in runs.items():
        _, tokens, other_seconds = progress(other, other_last)
        if _kind(other, other_config) == kind and finished(other, other_last) and tokens and other_seconds:
            rate = tokens / other_seconds
            return (
                f"about {duration(needed / rate, short=True)}, estimated: the {needed / 1e6:.2f}M tokens of {link} "
                f"at the {rate:,.0f} tokens/s of [{name}](results/{name}/), a run on such a CPU"
            )
    return "no committed run on such a machine yet"


def start_block(results: Path) -> str:
    """The first screen's times: ``nanogpt sanity`` and ``nanogpt overnight`` on each kind of machine, with the recipe
    that ``overnight`` trains there, from the committed runs."""
    from .recipes import for_device

    sanity = sanity_cells(results)
    lines = [
        "| your machine | `nanogpt overnight` trains | `nanogpt sanity` | `nanogpt overnight` to the target |",
        "| --- | --- | --- | --- |",
    ]
    for kind in ("gpu", "cpu-bf16", "cpu-no-bf16"):
        params = for_device("cuda" if kind == "gpu" else "cpu").params
        lines.append(
            f"| {HARDWARE_KINDS[kind]} | [{params}]({params}) | {sanity.get(kind, 'no committed run yet')} "
            f"| {overnight_cell(results, kind)} |"
        )
    return "\n".join(lines)


def headline_block(results: Path) -> str:
    """One sentence with the result: the target, and the fastest clean run at it on each kind of machine."""
    fastest: dict[str, tuple[float, str]] = {}
    for folder, summary, config, last in clean_runs(results):
        kind = _kind(summary, config)
        _, tokens, seconds = progress(summary, last)
        device = str(summary.get("device", "?"))
        where = f"one {device}" if kind == "gpu" else f"a {HARDWARE_KINDS[kind]} {device.removeprefix('CPU ')}"
        loss = cell((stop_of(summary) or {}).get("value"), ".4f")
        text = (
            f"on {where} in {duration(seconds, short=True)} ([{folder.name}](results/{folder.name}/): {loss} after "
            f"{tokens / 1e6:.2f}M tokens)"
        )
        if kind not in fastest or seconds < fastest[kind][0]:
            fastest[kind] = (seconds, text)
    if not fastest:
        return "No committed run has reached the target yet."
    reached = " and ".join(text for _, text in sorted(fastest.values()))
    return (
        f"**Target reached:** a GPT-2 style model of 124M parameters, trained from scratch on tiny-shakespeare, "
        f"brought its training loss below the course's 0.099999, measured over every token of the text: {reached}."
    )


def tests_block(results: Path) -> str:
    """What ``make test`` (ruff and pytest) took on each kind of machine, from the committed JUnit XML."""
    parts = []
    for path in sorted(results.glob(TESTS_PATTERN)):
        device, text = tests_record(path)
        parts.append(f"on a {HARDWARE_KINDS[hardware_kind(device, 'bf16')]}, {text.removeprefix('pytest: ')}")
    return "`make test` runs ruff and pytest: " + ("; ".join(parts) or "no committed record yet") + "."


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
OVERVIEW_BLOCKS = {
    "HEADLINE": headline_block,
    "START": start_block,
    "RUNS": runs_block,
    "COMPARISON": comparison_block,
    "TESTS": tests_block,
}
