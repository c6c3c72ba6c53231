"""Reports from a run directory (never from the model): loss curve, summary, metrics, log excerpt, samples.

    python -m nanogpt_lib.report --out_dir out/full --readme README.md

rewrites the README blocks between ``<!--AUTO:NAME:START-->`` and ``<!--AUTO:NAME:END-->`` (NAME in PLOT,
SUMMARY, LOGS, METRICS, SAMPLES) and copies the loss curve and the evidence (logs, metrics, samples, summary,
run config, and the executed notebooks and their HTML where the run directory holds them) into
``results/<run name>/`` beside that README, which the blocks link to. The run name is the run directory's
name unless ``--name`` gives another. The summary's comparison table shows, beside the runs of others, this
project's runs whose evidence is already in ``results/``. Running it twice changes nothing the second time. A
README without the markers, or a run directory without metrics, is an error that leaves every file untouched.
``--evidence_only`` copies the evidence and leaves the README as it is (for a run still in progress).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runlog
from .atomic import atomic_write
from .errors import UserError, run_cli
from .rundir import RunDir

PLOT_NAME = "loss_curve.png"

# Runs of the same task by others, from their own logs: what this project's run is compared with in the README.
# (name, hardware, precision, tokens per step, steps, tokens, wall time, which loss crossed the target)
OTHER_RUNS = (
    ("The course's reference run", "RTX 4060 Ti", "fp16", "48×128×3 = 18,432", "2,130", "39.3M", "~41 min",
     "one step's loss (0.0899)"),
    ("Peer, fewest tokens", "not stated", "not stated", "8×256 = 2,048", "4,578", "9.4M", "not stated",
     "one batch's loss"),
    ("Peer", "not stated", "not stated", "not stated", "not stated", "12.3M", "not stated",
     "mean loss of 200 batches"),
    ("Peer, warm-up + cosine", "not stated", "not stated", "32K", "522", "17.1M", "not stated", "step loss"),
    ("Peer, largest batch", "not stated", "not stated", "131K", "~205", "27M", "not stated", "step loss"),
)  # fmt: skip


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


RUN_PLACES = ("out_sanity", "out/*")  # where the Makefile and the notebooks put runs


def find_run(out_dir: str | os.PathLike | None) -> Path:
    """``out_dir`` itself, or (when None) the run directory under RUN_PLACES that trained most recently."""
    if out_dir is not None:
        return Path(out_dir)
    runs = [RunDir(path) for place in RUN_PLACES for path in Path().glob(place)]
    runs = [run for run in runs if run.metrics.is_file()]
    if not runs:
        raise UserError(
            "no run found in out_sanity/ or out/: train one first (notebook 03 or 04, or make sanity), "
            "or set out_dir to its run directory"
        )
    return max(runs, key=lambda run: run.metrics.stat().st_mtime).root


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


# ---------------------------------------------------------------------- the pieces


def loss_figure(rows: list[dict], target: float, title: str, size: tuple[float, float] = (8, 4.5)):
    """Step loss (log scale) against steps from metrics rows, with the target line and any full-corpus losses.

    The report's PNG and the notebooks' live plot both draw this figure.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=120)
    ax = fig.subplots()
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1.2, color="tab:blue",
            label="training loss (step mean)")  # fmt: skip
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
    """The run's loss curve as a PNG at ``path``."""
    device = run.summary.get("device") or run.config.get("device_name", "")
    title = f"{run.config.get('train_config', {}).get('model', 'GPT')} on {device}".strip()
    fig = loss_figure(run.metrics, run.target_loss, title)
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", metadata={"Software": None}))  # same run, same bytes
    return path


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min ({seconds:,.0f} s)"


def _fmt(value: Any, spec: str = "") -> str:
    return "–" if value is None else format(value, spec)


def summary_block(run: Run, others: Sequence[tuple[str, ...]] = ()) -> str:
    """The run's figures as a table, then the comparison table (``others``: this project's other runs)."""
    s, c = run.summary, run.config
    status = {
        "target_reached": f"**target reached** (stopped by the {str(s.get('stopped_by', '')).replace('_', ' ')})",
        "completed": "completed all steps without reaching the target",
        "interrupted": "interrupted (resumable from last.pt)",
    }.get(s.get("status"), "in progress (no summary.json yet)")
    last = run.metrics[-1]
    rows = [
        ("Status", status),
        ("Target", f"training loss ≤ {run.target_loss}"),
        (
            "First step whose loss was below the target",
            f"step {_fmt(s.get('target_step'))}: {_fmt(s.get('target_step_loss'), '.6f')}",
        ),
        ("Full-corpus loss", f"{_fmt(s.get('full_corpus_loss'), '.6f')} (eval mode, every token of the input once)"),
        ("Best step loss", f"{_fmt(s.get('best_step_loss'), '.6f')} at step {_fmt(s.get('best_step'))}"),
        ("Steps", f"{_fmt(s.get('steps', int(last['step'])), ',')}"),
        (
            "Tokens seen",
            f"{_fmt(s.get('tokens_seen', last.get('tokens_seen')), ',.0f')} "
            f"({_fmt(s.get('epochs', last.get('epoch')), '.2f')} passes over the corpus)",
        ),  # fmt: skip
        ("Tokens per step", _fmt(s.get("tokens_per_step") or c.get("tokens_per_step"), ",")),
        (
            "Training time",
            f"{_fmt_seconds(s.get('train_time_s'))} (warm-up/compile {_fmt_seconds(s.get('warmup_time_s'))} apart)",
        ),
        (
            "Wall time",
            f"{_fmt_seconds(s.get('wall_time_s', last.get('elapsed_s')))} (checkpoints "
            f"{_fmt_seconds(s.get('checkpoint_time_s'))}, samples {_fmt_seconds(s.get('sample_time_s'))}, "
            f"full-corpus loss {_fmt_seconds(s.get('eval_time_s'))})",
        ),  # fmt: skip
        ("Throughput", f"{_fmt(s.get('tok_per_s'), ',.0f')} tokens/s"),
        ("Model", f"{c.get('train_config', {}).get('model', '?')}, {_fmt(c.get('n_params'), ',')} parameters"),
        ("Device", f"{s.get('device') or c.get('device_name', '?')}, amp {s.get('amp') or c.get('amp', '?')}"),
        (
            "Software",
            ", ".join(f"{k} {v}" for k, v in c.get("versions", {}).items() if k in ("python", "torch", "cuda") and v),
        ),
        ("Command", f"`{c.get('command', '?')}`"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"| | |\n| --- | --- |\n{table}\n\n{comparison_block(run, others)}"


def _crossed(summary: dict[str, Any], last: dict[str, Any]) -> str:
    """Which loss crossed the target, or where a run stands that has not reached it: its last logged loss (the mean
    of the steps since the row before), not one noisy step."""
    status = summary.get("status")
    if status == "target_reached" and summary.get("stopped_by") == "full_corpus_loss":
        return f"full-corpus loss ({_fmt(summary.get('full_corpus_loss'), '.4f')})"
    if status == "target_reached":
        return f"one step's loss ({_fmt(summary.get('target_step_loss'), '.4f')})"
    logged = f"last logged loss {_fmt(last.get('loss'), '.4f')}"
    return {
        "interrupted": f"not yet: interrupted, resumable ({logged})",
        "completed": f"not reached in its steps ({logged})",
    }.get(status, "not yet: in progress")


OTHER_PHASES = (64, 128, 192)  # where the phase column looks besides phase 0


def phases_cell(phases_file: Path) -> str:
    """The full-corpus loss at phase 0 and the worst of OTHER_PHASES, from a run's phases.md (evaluate --out)."""
    losses = runlog.read_phase_table(phases_file)
    if losses is None:
        return "not measured" if not phases_file.is_file() else "not measured (the checkpoint is gone)"
    others = [(losses[p], p) for p in OTHER_PHASES if p in losses]
    worst = f" / {max(others)[0]:.4f} (phase {max(others)[1]})" if others else ""
    return f"{losses[0]:.4f}{worst}" if 0 in losses else worst.lstrip(" /")


def run_row(
    label: str, summary: dict[str, Any], config: dict[str, Any], last: dict[str, Any], phases_file: Path
) -> tuple[str, ...]:
    """One run as a row of the comparison table, from its summary.json, run_config.json, last metrics row and phase
    table."""
    batch = config.get("train_config", {})
    per_step = summary.get("tokens_per_step") or config.get("tokens_per_step")
    shape = (
        f"{batch['batch_size']}×{batch['seq_len']}×{batch['grad_accum']} = {_fmt(per_step, ',')}"
        if {"batch_size", "seq_len", "grad_accum"} <= set(batch)
        else _fmt(per_step, ",")
    )
    tokens = summary.get("tokens_seen", last.get("tokens_seen"))
    wall = _fmt_seconds(summary.get("wall_time_s", last.get("elapsed_s")))
    resumes = len(config.get("resumes", []))  # run_config.json records each resume as it starts
    if resumes:
        wall += f", {resumes} resume{'s' if resumes > 1 else ''}"
    return (
        label,
        summary.get("device") or config.get("device_name", "?"),
        summary.get("amp") or config.get("amp", "?"),
        shape,
        _fmt(summary.get("steps", int(last.get("step") or 0)), ","),
        f"{tokens / 1e6:.2f}M" if tokens else "–",
        wall,
        _crossed(summary, last),
        phases_cell(phases_file),
    )


def project_runs(results: Path, exclude: str | None = None) -> list[tuple[str, ...]]:
    """Rows for this project's other runs: each folder of ``results`` that holds the evidence of a run (its
    summary.json, run_config.json and train_metrics.csv), the one named ``exclude`` left out, linked by folder."""
    rows = []
    for folder in sorted(path.parent for path in results.glob("*/summary.json")):
        files = [folder / "summary.json", folder / "run_config.json", folder / "train_metrics.csv"]
        if folder.name == exclude or not all(path.is_file() for path in files):
            continue
        try:
            summary, config = runlog.read_json(files[0]), runlog.read_json(files[1])
            metrics = runlog.read_metrics(files[2]) or [{}]
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read the evidence in {folder}: {err}") from None
        label = f"This project: [{folder.name}](results/{folder.name}/)"
        rows.append(run_row(label, summary, config, metrics[-1], folder / "phases.md"))
    return rows


def comparison_block(run: Run, others: Sequence[tuple[str, ...]] = ()) -> str:
    """This run beside this project's ``others`` (see ``project_runs``), the course's reference run and the best runs
    of others (figures from their own logs)."""
    ours = run_row("**This run**", run.summary, run.config, run.metrics[-1], RunDir(run.out_dir).phases)
    header = (
        "| run | hardware | precision | tokens/step | steps | tokens | wall time | what crossed the target "
        "| full-corpus loss at phase 0 / the worst of 64, 128, 192 |\n"
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |"
    )
    rows = "\n".join("| " + " | ".join(row) + " |" for row in (ours, *others, *(r + ("–",) for r in OTHER_RUNS)))
    return (
        f"{header}\n{rows}\n\nOnly this project's runs report the loss over the whole corpus; the others stopped on "
        f"the loss of one step (or a mean of steps), which a noisy batch can cross early. The wall time of a resumed "
        f"run adds up the training loops of its sessions, steps redone after a resume included; starting each "
        f"session (loading the checkpoint) comes on top."
    )


def plot_block(plot_rel: str) -> str:
    return f"![Training loss per optimizer step, log scale, with the target line]({plot_rel})"


def metrics_block(run: Run, results_rel: str, max_rows: int = 12) -> str:
    """Evenly spaced rows of the metrics CSV, always with the first and the last."""
    rows = run.metrics
    if len(rows) > max_rows:
        picks = sorted({round(i * (len(rows) - 1) / (max_rows - 1)) for i in range(max_rows)})
        rows = [rows[i] for i in picks]
    lines = [
        "| step | loss | lr | tokens seen | tok/s | elapsed | full-corpus loss |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['step']:,.0f} | {r['loss']:.6f} | {_fmt(r.get('lr'), '.2e')} | {_fmt(r.get('tokens_seen'), ',.0f')} "
            f"| {_fmt(r.get('tok_per_s'), ',.0f')} | {_fmt(r.get('elapsed_s'), '.1f')} s "
            f"| {_fmt(r.get('corpus_loss'), '.6f')} |"
        )
    return "\n".join(lines) + f"\n\n{len(run.metrics):,} rows in all: `{results_rel}/train_metrics.csv`."


def log_excerpt(run: Run, head: int = 4, tail: int = 12) -> str:
    """The first and last lines of train.log, with a count of those left out ("" without a log)."""
    lines = run.log_lines
    if len(lines) > head + tail:
        lines = [*lines[:head], f"... ({len(lines) - head - tail:,} lines) ...", *lines[-tail:]]
    return "\n".join(lines)


def logs_block(run: Run) -> str:
    excerpt = log_excerpt(run)
    return f"```text\n{excerpt}\n```" if excerpt else "*No train.log in the run directory.*"


def samples_block(run: Run) -> str:
    """The latest sample for each prompt."""
    if not run.samples:
        return "*No samples in the run directory.*"
    latest: dict[str, dict[str, Any]] = {}
    for sample in run.samples:
        latest[sample["prompt"]] = sample  # later samples replace earlier ones
    parts = [
        f"Step {s['step']:,}, prompt `{s['prompt'].strip()}`:\n\n```text\n{s['output']}\n```" for s in latest.values()
    ]
    return "\n\n".join(parts)


# ---------------------------------------------------------------------- the README


def _marker(name: str, edge: str) -> str:
    return f"<!--AUTO:{name}:{edge}-->"


def replace_blocks(text: str, blocks: dict[str, str]) -> str:
    """Replace the content between each pair of markers; every marker must be there exactly once."""
    missing = [n for n in blocks if text.count(_marker(n, "START")) != 1 or text.count(_marker(n, "END")) != 1]
    if missing:
        raise UserError(
            f"the README lacks the markers (or has them twice) for: {', '.join(missing)}; "
            f"each block needs one {_marker('NAME', 'START')} and one {_marker('NAME', 'END')} line"
        )
    misordered = [n for n in blocks if text.index(_marker(n, "END")) < text.index(_marker(n, "START"))]
    if misordered:
        raise UserError(f"the README has an END marker before its START marker for: {', '.join(misordered)}")
    for name, content in blocks.items():
        start, end = _marker(name, "START"), _marker(name, "END")
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = f"{before}{start}\n{content.strip()}\n{end}{after}"
    return text


def copy_evidence(src: Path, dst: Path) -> None:
    """Copy one evidence file; an executed notebook is marked ``keep_output`` so that nbstripout, which keeps the
    course notebooks' outputs out of commits, commits this one whole."""
    if src.suffix == ".ipynb":
        try:
            notebook = json.loads(src.read_text(encoding="utf-8"))
            notebook.setdefault("metadata", {})["keep_output"] = True
        except (ValueError, AttributeError):  # not a notebook papermill wrote: copied as it is
            pass
        else:
            dst.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            return
    shutil.copyfile(src, dst)


def _results_folder(run: Run, readme: Path, name: str | None) -> tuple[str, Path]:
    """The run's name and its evidence folder, ``results/<name>/`` beside the README."""
    name = name or run.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"run name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder in results/)")
    return name, readme.resolve().parent / "results" / name


def write_evidence(run: Run, results: Path) -> None:
    """Draw the loss curve and copy it with the run's evidence files into ``results``."""
    try:
        results.mkdir(parents=True, exist_ok=True)
        run_dir = RunDir(run.out_dir)
        plot_loss_curve(run, run_dir.loss_curve)
        shutil.copyfile(run_dir.loss_curve, results / PLOT_NAME)
        for src, target in run_dir.evidence().items():
            copy_evidence(src, results / target)
    except OSError as err:
        raise UserError(f"cannot write the evidence ({err.filename}: {err.strerror})") from None


def write_report(
    out_dir: str | os.PathLike,
    readme: str | os.PathLike,
    name: str | None = None,
    force: bool = False,
    evidence_only: bool = False,
) -> dict[str, Any]:
    """Render the loss curve and the README blocks of a run, copy the evidence to results/<name>/, rewrite the README.

    ``name`` defaults to the run directory's name. A README whose results show a run that reached the target is
    not rewritten from a run that did not, unless ``force``. With ``evidence_only`` the README stays as it is and
    only results/<name>/ is written (the evidence of a run in progress, say). The comparison table lists the other
    runs whose evidence is in results/.
    """
    run = load_run(out_dir)
    readme = Path(readme)
    if not readme.is_file():
        raise UserError(f"README {readme} not found")
    name, results = _results_folder(run, readme, name)
    if evidence_only:
        write_evidence(run, results)
        return {"readme": str(readme), "results": str(results), "changed": False, "blocks": {}}
    results_rel = f"results/{name}"
    blocks = {
        "SUMMARY": summary_block(run, project_runs(results.parent, exclude=name)),
        "PLOT": plot_block(f"{results_rel}/{PLOT_NAME}"),
        "METRICS": metrics_block(run, results_rel),
        "LOGS": logs_block(run),
        "SAMPLES": samples_block(run),
    }
    old = readme.read_text(encoding="utf-8")
    new = replace_blocks(old, blocks)  # raises before anything is written
    shown = old.split(_marker("SUMMARY", "START"), 1)[1].split(_marker("SUMMARY", "END"), 1)[0]
    if "**target reached**" in shown and run.summary.get("status") != "target_reached" and not force:
        raise UserError(
            f"{readme} shows a run that reached the target, and {run.out_dir} did not "
            f"(status: {run.summary.get('status', 'in progress')}); nothing was written. "
            f"Replace it anyway with --force (in notebook 05: force = True), or keep its evidence only "
            f"with --evidence_only"
        )
    write_evidence(run, results)
    if new != old:
        try:
            atomic_write(readme, lambda fh: fh.write(new.encode("utf-8")))
        except OSError as err:
            raise UserError(f"cannot write the report ({err.filename}: {err.strerror})") from None
    return {"readme": str(readme), "results": str(results), "changed": new != old, "blocks": blocks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nanogpt_lib.report",
        description="Fill the README's AUTO blocks and results/<run name>/ from a run directory.",
    )
    parser.add_argument("--out_dir", required=True, help="the run directory to report on")
    parser.add_argument(
        "--readme", default="README.md", help="README to rewrite; results/ goes beside it (default: README.md)"
    )
    parser.add_argument(
        "--name", help="the folder in results/ for this run's evidence (default: the run directory's name)"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace README results that reached the target with a run that did not"
    )
    parser.add_argument(
        "--evidence_only",
        action="store_true",
        help="only copy the evidence to results/<run name>/ (a run in progress, say); the README stays as it is",
    )
    args = parser.parse_args(argv)
    report = write_report(args.out_dir, args.readme, args.name, args.force, args.evidence_only)
    state = "left as it is" if args.evidence_only else "updated" if report["changed"] else "already up to date"
    print(f"{args.readme} {state}; evidence in {report['results']}", file=sys.stderr)
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
