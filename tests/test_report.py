"""The report: README blocks rewritten from a run directory, idempotently, or refused with the README untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanogpt_lib import overview, report, runlog, train
from nanogpt_lib.errors import EXIT_USER_ERROR, UserError, run_cli

from .conftest import ROOT, run_module, tiny_args, write_small_corpus

README = """# A course README

Intro text that must survive.

<!--AUTO:SUMMARY:START-->
old summary
<!--AUTO:SUMMARY:END-->

<!--AUTO:PLOT:START-->
<!--AUTO:PLOT:END-->

Text between blocks.

<!--AUTO:METRICS:START-->
<!--AUTO:METRICS:END-->
<!--AUTO:LOGS:START-->
<!--AUTO:LOGS:END-->
<!--AUTO:SAMPLES:START-->
<!--AUTO:SAMPLES:END-->

The end.
"""
# with the comparison of every run in results/ beside the runs of others, drawn from results/ alone
COMPARED = README.replace("The end.", "<!--AUTO:COMPARISON:START-->\n<!--AUTO:COMPARISON:END-->\n\nThe end.")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    corpus = write_small_corpus(tmp)
    out = tmp / "run"
    argv = tiny_args(corpus, out, "--steps", "8", "--log_every", "2", "--sample_every", "4", "--target_loss", "10.3")
    assert run_cli(train.main, argv) == 0
    return out


def test_readme_blocks_are_filled_and_idempotent(run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # results/ must land beside the README, not in the working directory
    docs = tmp_path / "docs"
    docs.mkdir()
    readme = docs / "README.md"
    readme.write_text(README, encoding="utf-8")

    first = report.write_report(run_dir, readme)
    text = readme.read_text(encoding="utf-8")
    assert first["changed"]
    assert "old summary" not in text and "Intro text that must survive." in text and text.endswith("The end.\n")
    assert "![Training loss" in text and f"(results/{run_dir.name}/loss_curve.png)" in text
    assert "| step | loss |" in text and "Training complete." in text and "```text\nBIANCA:" in text
    for name in ("loss_curve.png", "train_metrics.csv", "train.log", "samples.txt", "summary.json", "run_config.json"):
        assert (docs / "results" / run_dir.name / name).is_file()
    assert not (tmp_path / "results").exists()

    second = report.write_report(run_dir, readme)
    assert not second["changed"] and readme.read_text(encoding="utf-8") == text


def test_summary_tells_what_stopped_the_run(run_dir: Path) -> None:
    block = report.summary_block(report.load_run(run_dir), "tiny-run")
    assert block.startswith("| | |\n| --- | --- |\n| Run | [tiny-run](results/tiny-run/) |")
    assert "**target reached** (stopped by one step's loss)" in block
    summary = report.load_run(run_dir).summary  # the stop as the loop decided it, which the report reads
    assert summary["stopped_by"] == "step_loss" and summary["stop"] == {
        "rule": "step_loss", "status": "target_reached", "value": summary["target_step_loss"], "what": "one step's loss"
    }  # fmt: skip
    assert "Full-corpus loss" in block and "tiny, 6,862,464 parameters" in block
    compared = overview.comparison_block(run_dir.parent / "no-results", report.load_run(run_dir))
    ours = next(line for line in compared.splitlines() if line.startswith("| **This run**"))
    assert "| 2×32×2 = 128 |" in ours and "| fp32 |" in ours and "one step's loss" in ours


PEERS = (
    "run,hardware,precision,tokens_per_step,steps,tokens,wall_time,crossed,source\n"
    'The course\'s reference run,RTX 4060 Ti,fp16,"48×128×3 = 18,432","2,130",39.3M,~41 min,one step\'s loss,'
    "the course's log\n"
    '"Peer, fewest tokens",,,"8×256 = 2,048","4,578",9.38M,,one batch\'s loss,https://example.org/peer\n'
)


def test_the_runs_of_others_come_from_a_data_file_with_their_sources(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "others.csv").write_text(PEERS, encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(COMPARED, encoding="utf-8")
    report.write_report(run_dir, readme)
    rows = [line for line in readme.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    ours = rows.index(next(r for r in rows if r.startswith(f"| [{run_dir.name}](results/{run_dir.name}/) |")))
    assert rows[ours + 1].startswith("| The course's reference run (the course's log) | RTX 4060 Ti | fp16 |")
    assert rows[ours + 2].startswith("| [Peer, fewest tokens](https://example.org/peer) | not stated | not stated |")
    assert rows[ours + 2].endswith("| 9.38M | not stated | one batch's loss | the same | – |")  # their own crossing

    (tmp_path / "results" / "others.csv").write_text("run,hardware\nx,y\n", encoding="utf-8")
    with pytest.raises(UserError, match="others.csv lacks the column"):
        report.write_report(run_dir, readme)


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1"
skipped="2" tests="20" time="312.5"><properties><property name="device" value="CPU X (x86_64, 2 threads, AMX)" />
</properties></testsuite></testsuites>"""


def test_the_first_screen_shows_each_run_and_the_two_commands_from_results(run_dir: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    keys = ("HEADLINE", "START", "RUNS", "TESTS")
    markers = "".join(f"<!--AUTO:{key}:START-->\n<!--AUTO:{key}:END-->\n" for key in keys)
    readme.write_text(README + markers, encoding="utf-8")
    slow = _interrupted_copy(run_dir, tmp_path / "slow")
    report.write_report(slow, readme, evidence_only=True)
    report.write_report(run_dir, readme, name="sanity-cpu-no-bf16", evidence_only=True)  # a sanity run's evidence
    (tmp_path / "results" / "tests-cpu-bf16.xml").write_text(JUNIT, encoding="utf-8")
    (tmp_path / "results" / "slow" / "04_full_training.html").write_text("<html></html>", encoding="utf-8")

    report.write_report(run_dir, readme)  # its own row is there too, drawn after its evidence was copied
    text = readme.read_text(encoding="utf-8")

    def block(key: str) -> str:
        return text.split(f"<!--AUTO:{key}:START-->")[1].split(f"<!--AUTO:{key}:END-->")[0]

    runs = block("RUNS")
    assert (
        f"| [{run_dir.name}](results/{run_dir.name}/) | CPU" in runs and "| **target reached** by the one step" in runs
    )
    # an unfinished run is named below the table, not a row of it, and is not the headline
    assert "| [slow](results/slow/) |" not in runs and "sanity-" not in runs
    assert "Not finished, so not in the table" in runs and "[slow](results/slow/) (stopped at step" in runs
    headline = block("HEADLINE")
    assert headline.startswith("\n**Target reached:**") and f"([{run_dir.name}](results/{run_dir.name}/):" in headline
    assert "slow" not in headline
    start = block("START").splitlines()
    no_bf16 = next(line for line in start if line.startswith("| CPU without bf16 units |"))
    assert "([run](results/sanity-cpu-no-bf16/))" in no_bf16  # the sanity run, on its kind of machine only
    assert next(line for line in start if line.startswith("| GPU |")).count("no committed run") == 2
    assert block("TESTS").strip() == (
        "`make test` runs ruff and pytest: on a CPU with bf16 units, 17 passed, 1 failed, 2 skipped in 5.2 min (312 s) "
        "([junit](results/tests-cpu-bf16.xml))."
    )
    assert report.write_report(run_dir, readme)["changed"] is False

    # the evidence of another run redraws the overview, and only it
    (tmp_path / "later").mkdir()
    later = _interrupted_copy(run_dir, tmp_path / "later" / "run2")
    before = readme.read_text(encoding="utf-8")
    assert report.write_report(later, readme, evidence_only=True)["changed"]
    after = readme.read_text(encoding="utf-8")
    assert "[run2](results/run2/)" in after and "run2" not in after.replace(after.split("<!--AUTO:RUNS:")[1], "")
    results_part = lambda text: text.split("<!--AUTO:RUNS:START-->")[0]  # noqa: E731  (the run's own blocks)
    assert results_part(after) == results_part(before)


def test_a_notebook_still_running_is_not_copied(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    running = {"cells": [], "metadata": {"papermill": {"start_time": "2026-01-01T00:00:00", "end_time": None}}}
    (run / "05_report.ipynb").write_text(json.dumps(running), encoding="utf-8")
    (run / "html").mkdir()
    (run / "html" / "05_report.html").write_text("<html>half</html>", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    done = report.write_report(run, readme, evidence_only=True)
    assert done["left_out"] == ["05_report.ipynb", "05_report.html"]
    assert not (tmp_path / "results" / "run" / "05_report.ipynb").exists()
    assert not (tmp_path / "results" / "run" / "05_report.html").exists()
    running["metadata"]["papermill"]["end_time"] = "2026-01-01T00:01:00"  # papermill has finished it
    (run / "05_report.ipynb").write_text(json.dumps(running), encoding="utf-8")
    assert report.write_report(run, readme, evidence_only=True)["left_out"] == []
    assert (tmp_path / "results" / "run" / "05_report.ipynb").is_file()


def test_a_named_run_with_notebooks_and_html(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "04_full_training.ipynb").write_text('{"cells": [], "metadata": {"kernelspec": {}}}', encoding="utf-8")
    (run / "html").mkdir()
    (run / "html" / "04_full_training.html").write_text("<html></html>", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    report.write_report(run, readme, name="cpu-2core-bf16")
    folder = tmp_path / "results" / "cpu-2core-bf16"
    assert (folder / "04_full_training.ipynb").is_file() and (folder / "04_full_training.html").is_file()
    # evidence: the copy keeps its outputs through nbstripout's filter when committed
    copied = json.loads((folder / "04_full_training.ipynb").read_text(encoding="utf-8"))
    assert copied["metadata"] == {"kernelspec": {}, "keep_output": True}
    assert "(results/cpu-2core-bf16/loss_curve.png)" in readme.read_text(encoding="utf-8")
    with pytest.raises(UserError, match="run name '../x'"):
        report.write_report(run, readme, name="../x")


def test_readme_without_markers_is_left_untouched(run_dir: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README.replace("<!--AUTO:LOGS:END-->\n", ""), encoding="utf-8")
    before = readme.read_bytes()
    with pytest.raises(UserError, match="lacks the markers .* LOGS"):
        report.write_report(run_dir, readme)
    assert readme.read_bytes() == before and not (tmp_path / "results").exists()


def test_run_without_metrics_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    (tmp_path / "empty_run").mkdir()
    result = run_module("nanogpt_lib.report", "--out_dir", str(tmp_path / "empty_run"), "--readme", str(readme))
    assert result.returncode == EXIT_USER_ERROR and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: run directory") and "has no metrics" in result.stderr
    assert readme.read_text(encoding="utf-8") == README and not (tmp_path / "results").exists()


def test_samples_are_parsed_back(run_dir: Path) -> None:
    run = report.load_run(run_dir)
    assert [s["step"] for s in run.samples] == [4, run.summary["steps"]]  # every 4 steps, and at the target
    samples = run.samples
    assert all(s["prompt"] == "BIANCA:\n" and s["output"].startswith("BIANCA:\n") for s in samples)


def test_a_half_written_last_row_is_skipped(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    with open(copy / "logs" / "train_metrics.csv", "a") as fh:
        fh.write("7,10.2,1e-")  # what kill -9 in the middle of a row leaves
    rows = report.load_run(copy).metrics
    assert rows[-1]["step"] == report.load_run(run_dir).metrics[-1]["step"]


def test_a_run_that_missed_the_target_does_not_replace_one_that_reached_it(run_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    report.write_report(run_dir, readme)  # this run reached its target
    reached = readme.read_text(encoding="utf-8")
    short = tmp_path / "short"
    shutil.copytree(run_dir, short)
    summary = json.loads((short / "summary.json").read_text())
    (short / "summary.json").write_text(json.dumps({**summary, "status": "completed", "stopped_by": None}))
    with pytest.raises(UserError, match="reached the target, and .* did not .*--force"):
        report.write_report(short, readme)
    assert readme.read_text(encoding="utf-8") == reached and not (tmp_path / "results" / "short").exists()
    report.write_report(short, readme, force=True)
    assert "completed all steps without reaching the target" in readme.read_text(encoding="utf-8")


def test_find_run_picks_the_latest_run_or_says_what_to_do(run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import os
    import shutil

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"no run found .* \(notebook 03 or 04"):
        report.find_run(None)
    shutil.copytree(run_dir, tmp_path / "out_sanity")
    shutil.copytree(run_dir, tmp_path / "out" / "full")
    os.utime(tmp_path / "out_sanity" / "logs" / "train_metrics.csv", (1, 1))  # trained long ago
    assert report.find_run(None) == Path("out/full")
    assert report.find_run("elsewhere") == Path("elsewhere")
    assert UserError("x")._render_traceback_() == ["error: x"]  # one line in a notebook, not a traceback


def _interrupted_copy(run_dir: Path, dest: Path) -> Path:
    """A copy of the run as if it had been resumed twice, then stopped by Ctrl-C before the target."""
    import shutil

    shutil.copytree(run_dir, dest)
    summary = json.loads((dest / "summary.json").read_text())
    (dest / "summary.json").write_text(json.dumps({**summary, "status": "interrupted", "stopped_by": None}))
    config = json.loads((dest / "run_config.json").read_text())
    resumes = [{"step": 4, "time": "2026-01-01T00:00:00+00:00", "command": "train"}] * 2
    (dest / "run_config.json").write_text(json.dumps({**config, "resumes": resumes}))
    return dest


def test_the_comparison_lists_the_projects_other_runs_from_results(run_dir: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(COMPARED, encoding="utf-8")
    slow = _interrupted_copy(run_dir, tmp_path / "slow")
    report.write_report(slow, readme, evidence_only=True)
    text = readme.read_text(encoding="utf-8")  # the evidence alone: only the overview is drawn again
    assert text.split("<!--AUTO:COMPARISON:START-->")[0] == COMPARED.split("<!--AUTO:COMPARISON:START-->")[0]
    assert (tmp_path / "results" / "slow" / "summary.json").is_file()
    assert "| [slow](results/slow/) |" not in text  # an unfinished run is no row of the comparison
    (tmp_path / "results" / "notes").mkdir()  # a folder without a run's evidence is not a run

    report.write_report(run_dir, readme)
    rows = [line for line in readme.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    assert not any(r.startswith(("| The course", "| [Peer")) for r in rows)  # no results/others.csv: no runs of others
    assert sum(r.startswith(f"| [{run_dir.name}](results/") for r in rows) == 1  # the reached run, once
    assert not any("[notes]" in r or "[slow]" in r for r in rows)

    # the row an unfinished run would have: its shape, resumes and where it stands
    evidence = report.load_evidence(tmp_path / "results" / "slow")
    other = (
        "| "
        + " | ".join(
            overview.run_row("slow", evidence.summary, evidence.config, evidence.metrics[-1], tmp_path / "none.md")
        )
        + " |"
    )
    assert "| 2×32×2 = 128 |" in other
    logged = report.load_run(slow).metrics[-1]["loss"]
    assert f"2 resumes | not yet: interrupted, resumable (last logged loss {logged:.4f}) |" in other
    assert other.endswith("| not measured |")  # no phases.md
    (tmp_path / "results" / "slow" / "phases.md").write_text(
        "| phase | tokens predicted | full-corpus loss | seconds |\n| ---: | ---: | ---: | ---: |\n"
        "| 0 | 99 | 0.5 | 1.0 |\n| 64 | 35 | 0.7 | 1.0 |\n| 128 | 20 | 0.9 | 1.0 |\n"
    )
    assert overview.phases_cell(tmp_path / "results" / "slow" / "phases.md") == "0.5000 / 0.9000 (phase 128)"

    # the other way round: the reached run is a row of the interrupted run's table
    block = overview.comparison_block(tmp_path / "results", report.load_run(slow))
    reached = next(line for line in block.splitlines() if line.startswith(f"| [{run_dir.name}]"))
    assert "one step's loss" in reached and "resume" not in reached
    assert sum(line.startswith("| [slow]") for line in block.splitlines()) == 0  # "This run" is not listed twice


def test_the_headline_says_phase_0_only_and_the_comparison_the_first_step_below(run_dir: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README + "<!--AUTO:RUNS:START-->\n<!--AUTO:RUNS:END-->\n", encoding="utf-8")
    report.write_report(run_dir, readme)
    phases = tmp_path / "results" / run_dir.name / "phases.md"
    table = "| phase | tokens predicted | full-corpus loss | seconds |\n| ---: | ---: | ---: | ---: |\n"
    for worst, verdict in ((0.15, "| **target reached** by"), (0.52, "| **target reached at phase 0 only** by")):
        phases.write_text(f"{table}| 0 | 99 | 0.08 | 1.0 |\n| 64 | 99 | {worst} | 1.0 |\n", encoding="utf-8")
        assert report.write_overview(readme) is True
        row = next(line for line in readme.read_text().splitlines() if line.startswith(f"| [{run_dir.name}]"))
        assert verdict in row and f"| 0.0800 / {worst:.4f} (phase 64) |" in row
    summary = report.load_run(run_dir).summary
    block = overview.comparison_block(tmp_path / "results")
    row = next(line for line in block.splitlines() if line.startswith(f"| [{run_dir.name}]"))
    first = summary["target_step"]
    assert f"| {first:,} ({first * summary['tokens_per_step'] / 1e6:.2f}M tokens) |" in row


def test_the_results_alone_draw_the_same_readme_and_every_full_corpus_row(run_dir: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    report.write_report(run_dir, readme)
    assert report.write_from_results(readme, run_dir.name) is False  # the evidence says what the run directory said
    run = report.load_run(run_dir)
    rows = [{**run.metrics[0], "step": i, "corpus_loss": 0.5 if i in (3, 11, 17) else None} for i in range(1, 21)]
    block = report.metrics_block(report.Run(out_dir=run_dir, metrics=rows), "results/x")
    steps = [int(line.split("|")[1].replace(",", "")) for line in block.splitlines()[2:] if line.startswith("| ")]
    assert {3, 11, 17, 1, 20} <= set(steps) and len(steps) == len(set(steps))


def test_the_committed_readme_overview_is_what_results_say(tmp_path: Path) -> None:
    """The README's overview (HEADLINE, START, RUNS, COMPARISON, TESTS) is drawn again from the committed results/ and
    compared."""
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "results").symlink_to(ROOT / "results", target_is_directory=True)
    assert report.write_overview(readme) is False, (
        "README.md's overview drifted: python -m nanogpt_lib.report --overview"
    )


def test_a_run_logged_past_its_summary_is_reported_from_its_log(run_dir: Path, tmp_path: Path) -> None:
    summary = {"status": "interrupted", "steps": 4, "tokens_seen": 512, "wall_time_s": 10.0}
    last = {"step": 8, "tokens_seen": 1024, "elapsed_s": 30.0, "loss": 5.25}
    assert runlog.progress(summary, last) == (8, 1024, 30.0)  # steps, tokens and time from one source
    resumed = "not yet: resumed after its last stop, resumable (last logged loss 5.2500)"
    assert overview._crossed(summary, last) == resumed
    assert runlog.progress(summary, {**last, "step": 4}) == (4, 512, 10.0)
    reached = {**summary, "status": "target_reached", "steps": 8}
    assert runlog.progress(reached, last) == (8, 512, 10.0)
    # a run resumed after it diverged (or ran out of steps) is not shown as diverged by its old summary
    diverged = {**summary, "status": "diverged", "stop": {"rule": "diverged", "what": "a loss that is not a number"}}
    assert runlog.progress(diverged, last) == (8, 1024, 30.0)
    assert overview._crossed(diverged, last).startswith("not yet")
    # the run's own summary block says the same as its row
    run = report.load_run(run_dir)
    run.summary = dict(summary)
    run.metrics = [*run.metrics[:-1], {**run.metrics[-1], **last, "epoch": 2.5}]
    block = report.summary_block(run)
    assert "resumed after it stopped at step 4" in block and "| Steps | 8 |" in block
    assert "| Tokens seen | 1,024 (2.50 passes over the corpus) |" in block and "| Wall time | 30.0 s (" in block


def test_evidence_only_keeps_a_run_in_progress_beside_a_reached_readme(run_dir: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    report.write_report(run_dir, readme)
    reached = readme.read_text(encoding="utf-8")
    slow = _interrupted_copy(run_dir, tmp_path / "slow")
    refused = run_module("nanogpt_lib.report", "--out_dir", str(slow), "--readme", str(readme))
    assert refused.returncode == EXIT_USER_ERROR and "--evidence_only" in refused.stderr
    assert not (tmp_path / "results" / "slow").exists()
    kept = run_module("nanogpt_lib.report", "--out_dir", str(slow), "--readme", str(readme), "--evidence_only")
    assert kept.returncode == 0 and "left as it is" in kept.stderr
    assert readme.read_text(encoding="utf-8") == reached
    assert json.loads((tmp_path / "results" / "slow" / "summary.json").read_text())["status"] == "interrupted"
    assert (tmp_path / "results" / "slow" / "loss_curve.png").stat().st_size > 0


def test_committed_commands_show_no_folder_of_the_machine(tmp_path: Path, monkeypatch) -> None:
    from nanogpt_lib.runlog import command_line

    monkeypatch.chdir(tmp_path)
    shown = command_line("nanogpt_lib.sweep", ["--json", "/root/out/sweep.json", f"--out={tmp_path}/r/x.md", "-v"])
    assert shown == "python -m nanogpt_lib.sweep --json sweep.json --out=r/x.md -v"


def test_the_time_on_a_machine_without_a_run_of_its_recipe_is_estimated_from_one_that_ran_there() -> None:
    results = ROOT / "results"
    recipe, other = (runlog.read_json(results / name / "summary.json") for name in ("cpu-2core-bf16", "cpu-2core-wsd"))
    rate = other["tokens_seen"] / other["wall_time_s"]
    estimate = overview.overnight_cell(results, "cpu-no-bf16")
    assert estimate.startswith(f"about {runlog.duration(recipe['tokens_seen'] / rate, short=True)}, estimated: ")
    assert f"{rate:,.0f} tokens/s of [cpu-2core-wsd]" in estimate
    assert overview.overnight_cell(results, "cpu-bf16").startswith(runlog.duration(recipe["wall_time_s"], short=True))
