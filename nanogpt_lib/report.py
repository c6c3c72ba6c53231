"""Reports from a run directory (never from the model): loss curve, summary, metrics, log excerpt, samples.

    python -m nanogpt_lib.report --out_dir out/full --readme README.md

rewrites the README blocks between ``<!--AUTO:NAME:START-->`` and ``<!--AUTO:NAME:END-->`` (NAME in PLOT,
SUMMARY, LOGS, METRICS, SAMPLES) and copies the loss curve and the evidence (logs, metrics, samples, summary,
run config, and the executed notebooks and their HTML where the run directory holds them) into
``results/<run name>/`` beside that README, which the blocks link to. The run name is the run directory's
name unless ``--name`` gives another. Running it twice changes nothing the second time. A README without the
markers, or a run directory without metrics, is an error that leaves every file untouched. A README may also have
HEADLINE, START, RUNS, COMPARISON and TESTS blocks, its overview, drawn from ``results/`` alone (``overview.py``),
which the report redraws whenever it writes evidence.
``--evidence_only`` copies the evidence and leaves the README's results as they are (for a run still in
progress), redrawing only its overview.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from .atomic import atomic_write
from .errors import UserError, run_cli
from .overview import OVERVIEW_BLOCKS
from .plots import plot_loss_curve
from .rundir import Run, RunDir, evidence_name, load_evidence, load_run  # noqa: F401 (report.load_run)
from .runlog import cell, duration, from_log, logged_past_summary, progress, stop_of

PLOT_NAME = evidence_name("loss_curve")


RUN_PLACES = ("out_sanity", "out/*")  # where the Makefile and the notebooks put runs


def find_run(out_dir: str | os.PathLike | None) -> Path:
    """``out_dir`` itself, or (when None) the run directory under RUN_PLACES that trained most recently."""
    if out_dir is not None:
        return Path(out_dir)
    runs = [RunDir(path) for place in RUN_PLACES for path in Path().glob(place)]
    runs = [run for run in runs if run.metrics.is_file()]
    if not runs:
        raise UserError(
            "no run found in out_sanity/ or out/: train one first (notebook 03 or 04, or nanogpt sanity), "
            "or set out_dir to its run directory"
        )
    return max(runs, key=lambda run: run.metrics.stat().st_mtime).root


# ---------------------------------------------------------------------- the pieces


def summary_block(run: Run, name: str | None = None) -> str:
    """The run's figures as a table (its evidence folder results/``name``/ named first, when given)."""
    s, c = run.summary, run.config
    status = {
        "target_reached": f"**target reached** (stopped by {(stop_of(s) or {}).get('what', 'the target')})",
        "diverged": "diverged (the loss stopped being a number)",
        "completed": "completed all steps without reaching the target",
        "interrupted": "interrupted (resumable from last.pt)",
    }.get(s.get("status"), "in progress (no summary.json yet)")
    last = run.metrics[-1]
    if logged_past_summary(s, last):  # steps, tokens and wall time below from its log, the rest from its summary
        status = f"resumed after it stopped at step {s.get('steps')} (its summary.json); resumable from last.pt"
    steps, tokens, seconds = progress(s, last)
    passes = last.get("epoch") if from_log(s, last) else s.get("epochs", last.get("epoch"))
    amp = s.get("amp") or c.get("amp") or "?"
    rows = [
        *([("Run", f"[{name}](results/{name}/)")] if name else []),
        ("Status", status),
        ("Target", f"training loss ≤ {run.target_loss}"),
        (
            "First step whose loss was below the target",
            f"step {cell(s.get('target_step'))}: {cell(s.get('target_step_loss'), '.6f')}",
        ),
        ("Full-corpus loss", f"{cell(s.get('full_corpus_loss'), '.6f')} (eval mode, every token of the input once)"),
        ("Best step loss", f"{cell(s.get('best_step_loss'), '.6f')} at step {cell(s.get('best_step'))}"),
        ("Steps", cell(steps, ",")),
        ("Tokens seen", f"{cell(tokens, ',.0f')} ({cell(passes, '.2f')} passes over the corpus)"),
        ("Tokens per step", cell(s.get("tokens_per_step") or c.get("tokens_per_step"), ",")),
        (
            "Training time",
            f"{duration(s.get('train_time_s'))} (warm-up/compile {duration(s.get('warmup_time_s'))} apart)",
        ),
        (
            "Wall time",
            f"{duration(seconds)} (checkpoints "
            f"{duration(s.get('checkpoint_time_s'))}, samples {duration(s.get('sample_time_s'))}, "
            f"full-corpus loss {duration(s.get('eval_time_s'))})",
        ),  # fmt: skip
        ("Throughput", f"{cell(s.get('tok_per_s'), ',.0f')} tokens/s"),
        ("Model", f"{c.get('train_config', {}).get('model', '?')}, {cell(c.get('n_params'), ',')} parameters"),
        ("Device", f"{s.get('device') or c.get('device_name', '?')}, {'fp32' if amp == 'off' else amp}"),
        (
            "Software",
            ", ".join(f"{k} {v}" for k, v in c.get("versions", {}).items() if k in ("python", "torch", "cuda") and v),
        ),
        ("Command", f"`{c.get('command', '?')}`"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"| | |\n| --- | --- |\n{table}"


def plot_block(plot_rel: str, name: str | None = None) -> str:
    of = f" of {name}" if name else ""
    return f"![Training loss{of} per optimizer step, log scale, with the target line]({plot_rel})"


def metrics_block(run: Run, results_rel: str, max_rows: int = 6) -> str:
    """Evenly spaced rows of the metrics CSV, always with the first and the last, and every row where the full-corpus
    loss was measured."""
    rows = run.metrics
    if len(rows) > max_rows:
        picks = {round(i * (len(rows) - 1) / (max_rows - 1)) for i in range(max_rows)}
        picks |= {i for i, row in enumerate(rows) if row.get("corpus_loss") is not None}
        rows = [rows[i] for i in sorted(picks)]
    lines = [
        "| step | loss | lr | tokens seen | tok/s | elapsed | full-corpus loss |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['step']:,.0f} | {r['loss']:.6f} | {cell(r.get('lr'), '.2e')} | {cell(r.get('tokens_seen'), ',.0f')} "
            f"| {cell(r.get('tok_per_s'), ',.0f')} | {cell(r.get('elapsed_s'), '.1f')} s "
            f"| {cell(r.get('corpus_loss'), '.6f')} |"
        )
    return "\n".join(lines) + f"\n\n{len(run.metrics):,} rows in all: `{results_rel}/train_metrics.csv`."


def log_excerpt(run: Run, head: int = 2, tail: int = 8) -> str:
    """The first and last lines of train.log, with a count of those left out ("" without a log)."""
    lines = run.log_lines
    if len(lines) > head + tail:
        lines = [*lines[:head], f"... ({len(lines) - head - tail:,} lines) ...", *lines[-tail:]]
    return "\n".join(lines)


def logs_block(run: Run) -> str:
    excerpt = log_excerpt(run)
    return f"```text\n{excerpt}\n```" if excerpt else "*No train.log in the run directory.*"


def samples_block(run: Run, results_rel: str | None = None, max_lines: int = 12) -> str:
    """The latest sample (of the first prompt written at the latest step; its first ``max_lines`` lines), and where
    the others are."""
    if not run.samples:
        return "*No samples in the run directory.*"
    step = run.samples[-1]["step"]
    sample = next(s for s in run.samples if s["step"] == step)
    lines = sample["output"].splitlines()
    more = f"\n[... {len(lines) - max_lines} more lines]" if len(lines) > max_lines else ""
    shown = "\n".join(lines[:max_lines]) + more
    text = f"Step {step:,}, prompt `{sample['prompt'].strip()}`:\n\n```text\n{shown}\n```"
    if results_rel and len(run.samples) > 1:
        text += f"\n\n{len(run.samples):,} samples in all: [`{results_rel}/samples.txt`]({results_rel}/samples.txt)."
    return text


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


def still_running(notebook: Path) -> bool:
    """Whether papermill is still executing this notebook (or was killed in it): papermill writes the notebook as it
    goes and sets its end time only when the run is over, finished or failed."""
    try:
        meta = json.loads(notebook.read_text(encoding="utf-8")).get("metadata", {}).get("papermill")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(meta, dict) and bool(meta.get("start_time")) and not meta.get("end_time")


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


def write_evidence(run: Run, results: Path) -> list[str]:
    """Draw the loss curve and copy it with the run's evidence files into ``results``. A notebook that papermill is
    still executing (and its HTML) is left out, so that results/ never holds a half-run notebook; the names left
    out are returned."""
    try:
        results.mkdir(parents=True, exist_ok=True)
        run_dir = RunDir(run.out_dir)
        plot_loss_curve(run, run_dir.loss_curve)  # evidence like the rest, copied below
        running = {path.stem for path in run_dir.root.glob("*.ipynb") if still_running(path)}
        left_out = []
        for src, target in run_dir.evidence().items():
            if src.suffix in (".ipynb", ".html") and src.stem in running:
                left_out.append(target)
            else:
                copy_evidence(src, results / target)
        return left_out
    except OSError as err:
        raise UserError(f"cannot write the evidence ({err.filename}: {err.strerror})") from None


def run_blocks(run: Run, name: str, results: Path) -> dict[str, str]:
    """The README blocks of one run (SUMMARY, PLOT, METRICS, LOGS, SAMPLES), its evidence in ``results``."""
    results_rel = f"results/{name}"
    return {
        "SUMMARY": summary_block(run, name),
        "PLOT": plot_block(f"{results_rel}/{PLOT_NAME}", name),
        "METRICS": metrics_block(run, results_rel),
        "LOGS": logs_block(run),
        "SAMPLES": samples_block(run, results_rel),
    }


def _refuse_a_lesser_run(readme_text: str, run: Run, readme: Path) -> None:
    shown = readme_text.split(_marker("SUMMARY", "START"), 1)[1].split(_marker("SUMMARY", "END"), 1)[0]
    if "**target reached**" in shown and run.summary.get("status") != "target_reached":
        raise UserError(
            f"{readme} shows a run that reached the target, and {run.out_dir} did not "
            f"(status: {run.summary.get('status', 'in progress')}); nothing was written. "
            f"Replace it anyway with --force (in notebook 05: force = True), or keep its evidence only "
            f"with --evidence_only"
        )


def write_report(
    out_dir: str | os.PathLike,
    readme: str | os.PathLike,
    name: str | None = None,
    force: bool = False,
    evidence_only: bool = False,
) -> dict[str, Any]:
    """Render the loss curve and the README blocks of a run, copy the evidence to results/<name>/, rewrite the README.

    ``name`` defaults to the run directory's name. A README whose results show a run that reached the target is
    not rewritten from a run that did not, unless ``force``. With ``evidence_only`` the README's results stay as
    they are and only results/<name>/ is written (the evidence of a run in progress, say), with the README's
    overview of every run (OVERVIEW_BLOCKS, where it has their markers) drawn again from results/.
    """
    run = load_run(out_dir)
    readme = Path(readme)
    if not readme.is_file():
        raise UserError(f"README {readme} not found")
    name, results = _results_folder(run, readme, name)
    old = readme.read_text(encoding="utf-8")
    overview = [key for key in OVERVIEW_BLOCKS if _marker(key, "START") in old]
    blocks = {} if evidence_only else run_blocks(run, name, results)
    replace_blocks(old, {**blocks, **dict.fromkeys(overview, "")})  # raises before anything is written
    if not evidence_only and not force:
        _refuse_a_lesser_run(old, run, readme)
    left_out = write_evidence(run, results)
    blocks.update({key: OVERVIEW_BLOCKS[key](results.parent) for key in overview})
    new = replace_blocks(old, blocks)
    if new != old:
        try:
            atomic_write(readme, lambda fh: fh.write(new.encode("utf-8")))
        except OSError as err:
            raise UserError(f"cannot write the report ({err.filename}: {err.strerror})") from None
    return {
        "readme": str(readme),
        "results": str(results),
        "changed": new != old,
        "blocks": blocks,
        "left_out": left_out,
    }


def write_from_results(readme: str | os.PathLike, name: str) -> bool:
    """Draw the README's results again from the evidence of run ``name`` in results/ beside it; whether it changed."""
    readme = Path(readme)
    results = readme.parent / "results" / name
    old = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if not old:
        raise UserError(f"README {readme} not found")
    new = replace_blocks(old, run_blocks(load_evidence(results), name, results))
    if new != old:
        atomic_write(readme, lambda fh: fh.write(new.encode("utf-8")))
    return new != old


def write_overview(readme: str | os.PathLike) -> bool:
    """Draw the README's overview of the runs (OVERVIEW_BLOCKS) again from results/ beside it; whether it changed."""
    readme = Path(readme)
    try:
        old = readme.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read README {readme}: {err.strerror}") from None
    results = readme.parent / "results"
    new = replace_blocks(
        old, {key: draw(results) for key, draw in OVERVIEW_BLOCKS.items() if _marker(key, "START") in old}
    )
    if new != old:
        atomic_write(readme, lambda fh: fh.write(new.encode("utf-8")))
    return new != old


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nanogpt_lib.report",
        description="Fill the README's AUTO blocks and results/<run name>/ from a run directory.",
    )
    parser.add_argument("--out_dir", help="the run directory to report on (required but with --overview)")
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
        help="only copy the evidence to results/<run name>/ (a run in progress, say); of the README, only the "
        "overview of the runs (HEADLINE, START, RUNS, COMPARISON, TESTS) is redrawn",
    )
    parser.add_argument(
        "--from_results",
        metavar="NAME",
        help="draw the README's results (SUMMARY, PLOT, METRICS, LOGS, SAMPLES) from the evidence in results/NAME/ "
        "beside it, without its run directory; nothing else is written",
    )
    parser.add_argument(
        "--overview",
        action="store_true",
        help="only draw the README's overview (HEADLINE, START, RUNS, COMPARISON, TESTS) again from results/",
    )
    args = parser.parse_args(argv)
    if args.from_results:
        changed = write_from_results(args.readme, args.from_results)
        print(f"{args.readme}: {'updated' if changed else 'already up to date'}", file=sys.stderr)
        return 0
    if args.overview:
        changed = write_overview(args.readme)
        print(f"{args.readme}: overview {'updated' if changed else 'already up to date'}", file=sys.stderr)
        return 0
    if not args.out_dir:
        parser.error("--out_dir is required (or --overview)")
    report = write_report(args.out_dir, args.readme, args.name, args.force, args.evidence_only)
    state = "updated" if report["changed"] else "already up to date"
    if args.evidence_only:
        state = f"left as it is but for its overview of the runs ({state})" if report["blocks"] else "left as it is"
    print(f"{args.readme} {state}; evidence in {report['results']}", file=sys.stderr)
    if report["left_out"]:
        print(
            f"Not copied, still being run by papermill (or killed while it ran): {', '.join(report['left_out'])}; "
            f"once it has finished, nanogpt html --run-dir {args.out_dir} copies it",
            file=sys.stderr,
        )
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
