"""The sweep on the tiny model: trials stop at the target or a cap, rows are written as trials finish."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nanogpt_lib import sweep
from nanogpt_lib.config import parse_train_args
from nanogpt_lib.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError, run_cli


def write_plan(path: Path, corpus: Path, trials: list[dict]) -> Path:
    base = {"input_file": str(corpus), "model": "tiny", "device": "cpu", "batch_size": 2, "seq_len": 32,
            "grad_accum": 2, "lr": 1e-3, "target_loss": 10.6, "log_every": 1, "seed": 7}  # fmt: skip
    path.write_text(yaml.safe_dump({"base": base, "trials": trials}), encoding="utf-8")
    return path


def test_sweep_runs_trials_to_the_target_or_a_cap(small_corpus: Path, tmp_path: Path, capsys) -> None:
    plan = write_plan(tmp_path / "plan.yaml", small_corpus,
                      [{"name": "a"}, {"name": "a-again"}, {"name": "slow", "lr": 1e-6}])  # fmt: skip
    out, best = tmp_path / "sweep.md", tmp_path / "best.yaml"
    argv = ["--plan", str(plan), "--out", str(out), "--best", str(best), "--token_cap", "3000", "--device", "cpu",
            "--json", str(tmp_path / "sweep.json")]  # fmt: skip
    assert run_cli(sweep.main, argv) == 0
    records = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["trial"] for r in records] == ["a", "a-again", "slow"] and records[2]["options"]["lr"] == 1e-6
    assert records[0]["result"] == "target reached" and records[2]["corpus_cross"] is None
    assert records[2]["final_loss"] > 10.6 >= records[0]["corpus_cross"][3] == records[0]["final_loss"]
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| a") or line.startswith("| slow")]
    assert len(rows) == 3
    a, again, slow = (row.split(" | ") for row in rows)
    assert a[-1].startswith("target reached")
    # re-initialised weights, optimizer and data order: the same trial twice takes the same steps to the same loss
    assert a[1:12] == again[1:12] and a[14].split(", ")[-1] == again[14].split(", ")[-1]
    assert slow[-1].startswith("token cap (3,000)") and slow[14] == "–"
    assert float(slow[15]) > 10.6 and a[15] == a[14].split(", ")[-1]  # the loss where each trial ended
    assert float(a[16]) > 0 and a[3] == "random offsets" and a[4] == "adamw"  # the loss half a window later
    recipe = yaml.safe_load(best.read_text())
    assert recipe["lr"] == 1e-3 and recipe["stop_on"] == "corpus" and recipe["model"] == "tiny"
    assert best.read_text().startswith("# Recipe from sweep trial 'a")
    # the recipe is a parameter file for the CLI too (flags still win)
    cfg = parse_train_args(["--config", str(best), "--steps", "9"], prog="t", description="t")
    assert cfg.lr == 1e-3 and cfg.steps == 9 and cfg.stop_on == "corpus" and cfg.input_file == str(small_corpus)


def test_plans_are_checked_before_anything_runs(small_corpus: Path, tmp_path: Path, capsys) -> None:
    bad_option = write_plan(tmp_path / "p1.yaml", small_corpus, [{"name": "x", "lr_typo": 1}])
    with pytest.raises(UserError, match="unknown training option.*lr_typo"):
        sweep.load_plan(bad_option)
    model_change = write_plan(tmp_path / "p2.yaml", small_corpus, [{"name": "x", "dropout": 0.1}])
    with pytest.raises(UserError, match="sets dropout"):
        sweep.load_plan(model_change)
    out = tmp_path / "never.md"
    argv = ["--plan", str(tmp_path / "p1.yaml"), "--out", str(out)]
    assert run_cli(sweep.main, argv) == EXIT_USER_ERROR and not out.exists()
    assert "lr_typo" in capsys.readouterr().err


def test_a_trial_out_of_memory_does_not_end_the_sweep(small_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    import torch

    plan = write_plan(tmp_path / "plan.yaml", small_corpus, [{"name": "huge", "batch_size": 64}, {"name": "ok"}])
    real = sweep.run_trial

    def maybe_oom(model, runner, tokens, cfg, *args):
        if cfg.batch_size == 64:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(model, runner, tokens, cfg, *args)

    monkeypatch.setattr(sweep, "run_trial", maybe_oom)
    out = tmp_path / "sweep.md"
    assert run_cli(sweep.main, ["--plan", str(plan), "--out", str(out), "--token_cap", "2000", "--device", "cpu"]) == 0
    table = out.read_text()
    assert "| huge |" in table and "out of memory |" in table and "| ok |" in table


def test_a_sweep_on_a_slice_of_the_corpus(small_corpus: Path, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml", small_corpus, [{"name": "epoch", "sampling": "epoch", "lr": 1e-6}])
    out = tmp_path / "sweep.md"
    argv = ["--plan", str(plan), "--out", str(out), "--token_cap", "640", "--device", "cpu", "--corpus_chars", "2000"]
    assert run_cli(sweep.main, argv) == 0
    table = out.read_text()
    text = small_corpus.read_text(encoding="utf-8")[:2000]
    chars = text.rfind("\n") + 1
    assert f"the first {chars:,} characters of {small_corpus}" in table
    row = next(line for line in table.splitlines() if line.startswith("| epoch")).split(" | ")
    assert row[3] == "passes, random_phase" and row[10] == "640" and float(row[15]) > 10


def ctrl_c_at_lr(lr: float):
    """A stand-in for ``sweep.run_trial`` that is interrupted in the trial with this rate and runs the others."""
    real = sweep.run_trial

    def run_trial(model, runner, tokens, cfg, *rest):
        if cfg.lr == lr:
            raise KeyboardInterrupt
        return real(model, runner, tokens, cfg, *rest)

    return run_trial


def test_a_resumed_sweep_keeps_finished_rows_and_runs_the_rest(small_corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep.md"
    first = write_plan(tmp_path / "plan.yaml", small_corpus, [{"name": "a", "lr": 1e-6}])
    records = tmp_path / "sweep.json"
    common = ["--out", str(out), "--token_cap", "256", "--device", "cpu"]
    assert run_cli(sweep.main, ["--plan", str(first), *common, "--json", str(records)]) == 0
    row_a = next(line for line in out.read_text().splitlines() if line.startswith("| a |"))
    grown = write_plan(tmp_path / "plan.yaml", small_corpus, [{"name": "a", "lr": 1e-6}, {"name": "b", "lr": 2e-6}])
    assert run_cli(sweep.main, ["--plan", str(grown), *common, "--resume", "--json", str(records)]) == 0
    lines = out.read_text().splitlines()
    assert row_a in lines and sum(line.startswith("| b |") for line in lines) == 1
    assert [r["trial"] for r in json.loads(records.read_text())] == ["a", "b"]  # the kept trial stays in the JSON
    assert "trial 'a': kept from" in capsys.readouterr().out
    # a trial whose options changed in the plan runs again; the others are kept
    changed = write_plan(tmp_path / "plan.yaml", small_corpus, [{"name": "a", "lr": 3e-6}, {"name": "b", "lr": 2e-6}])
    assert run_cli(sweep.main, ["--plan", str(changed), *common, "--resume", "--json", str(records)]) == 0
    printed = capsys.readouterr().out
    assert "trial 'a': kept" not in printed and "trial 'b': kept" in printed
    assert json.loads(records.read_text())[0]["options"]["lr"] == 3e-6
    row_a = next(line for line in out.read_text().splitlines() if line.startswith("| a |"))
    # rows run with other caps are not mixed with new ones
    assert run_cli(sweep.main, ["--plan", str(grown), *common[:-4], "--token_cap", "512", "--device", "cpu",
                                "--resume", "--json", str(records)]) == EXIT_USER_ERROR  # fmt: skip
    assert "other caps" in capsys.readouterr().err and row_a in out.read_text().splitlines()
    # records from before they named their corpus and caps: the table beside them vouches for them
    legacy = [{k: v for k, v in r.items() if k not in ("corpus", "token_cap", "time_cap_s")} for r in
              json.loads(records.read_text())]  # fmt: skip
    records.write_text(json.dumps(legacy))
    assert run_cli(sweep.main, ["--plan", str(changed), *common, "--resume", "--json", str(records)]) == 0
    assert "trial 'a': kept" in capsys.readouterr().out
    # a table whose records are gone is not run over: the sweep stops before anything is written
    records.unlink()
    table = out.read_text()
    assert run_cli(sweep.main, ["--plan", str(changed), *common, "--resume", "--json", str(records)]) == EXIT_USER_ERROR
    assert "needs the sweep's records" in capsys.readouterr().err and out.read_text() == table
    assert run_cli(sweep.main, ["--plan", str(changed), *common, "--json", str(out)]) == EXIT_USER_ERROR
    assert "same file" in capsys.readouterr().err and out.read_text() == table


def test_ctrl_c_keeps_the_finished_trials_and_says_how_to_go_on(
    small_corpus: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    plan = write_plan(tmp_path / "plan.yaml", small_corpus, [{"name": "a", "lr": 1e-6}, {"name": "b", "lr": 2e-6}])
    out, records = tmp_path / "sweep.md", tmp_path / "sweep.json"
    args = ["--plan", str(plan), "--out", str(out), "--token_cap", "256", "--device", "cpu", "--json", str(records)]
    real = sweep.run_trial
    monkeypatch.setattr(sweep, "run_trial", ctrl_c_at_lr(2e-6))
    assert run_cli(sweep.main, args) == EXIT_INTERRUPTED
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted: trial 'b' was cut off; the 1 finished trials stay in") and "--resume" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert [r["trial"] for r in json.loads(records.read_text())] == ["a"]
    monkeypatch.setattr(sweep, "run_trial", real)
    assert run_cli(sweep.main, [*args, "--resume"]) == 0  # and --resume runs the rest
    assert [r["trial"] for r in json.loads(records.read_text())] == ["a", "b"]
    assert "trial 'a': kept" in capsys.readouterr().out


def test_a_resumed_sweep_cut_off_again_keeps_the_finished_trials_further_down_the_plan(
    small_corpus: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    out, records = tmp_path / "sweep.md", tmp_path / "sweep.json"
    common = ["--out", str(out), "--token_cap", "256", "--device", "cpu", "--json", str(records)]
    a, b, c = {"name": "a", "lr": 1e-6}, {"name": "b", "lr": 2e-6}, {"name": "c", "lr": 3e-6}
    assert run_cli(sweep.main, ["--plan", str(write_plan(tmp_path / "plan.yaml", small_corpus, [a, c])), *common]) == 0
    row_c = next(line for line in out.read_text().splitlines() if line.startswith("| c |"))
    real = sweep.run_trial
    monkeypatch.setattr(sweep, "run_trial", ctrl_c_at_lr(2e-6))
    grown = ["--plan", str(write_plan(tmp_path / "plan.yaml", small_corpus, [a, b, c])), *common, "--resume"]
    assert run_cli(sweep.main, grown) == EXIT_INTERRUPTED
    assert "the 2 finished trials stay in" in capsys.readouterr().err
    assert [r["trial"] for r in json.loads(records.read_text())] == ["a", "c"]
    assert row_c in out.read_text().splitlines()
    monkeypatch.setattr(sweep, "run_trial", real)
    assert run_cli(sweep.main, grown) == 0
    assert [r["trial"] for r in json.loads(records.read_text())] == ["a", "b", "c"]
    assert "trial 'c': kept" in capsys.readouterr().out


def test_a_resumed_sweep_still_names_the_best_recipe_among_kept_rows(
    small_corpus: Path, tmp_path: Path, capsys
) -> None:
    out, best = tmp_path / "sweep.md", tmp_path / "best.yaml"
    plan = write_plan(tmp_path / "plan.yaml", small_corpus, [{"name": "a"}])
    common = ["--plan", str(plan), "--out", str(out), "--token_cap", "3000", "--device", "cpu"]
    assert run_cli(sweep.main, common) == 0
    (record,) = json.loads(out.with_suffix(".json").read_text())  # the records beside the table, by default
    assert record["corpus_cross"] is not None and record["corpus_cross"][3] <= 10.6 and record["mid_phase_loss"]
    capsys.readouterr()
    assert run_cli(sweep.main, [*common, "--resume", "--best", str(best)]) == 0
    assert "trial 'a': kept" in capsys.readouterr().out  # nothing runs again
    assert yaml.safe_load(best.read_text())["stop_on"] == "corpus" and "trial 'a'" in best.read_text()


def test_a_resumed_sweep_cut_off_early_still_names_the_best_kept_trial(
    small_corpus: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    out, best = tmp_path / "sweep.md", tmp_path / "best.yaml"
    a, b, c = {"name": "a", "lr": 1e-6}, {"name": "b", "lr": 2e-6}, {"name": "c"}  # only c crosses
    common = ["--out", str(out), "--token_cap", "3000", "--device", "cpu"]
    assert run_cli(sweep.main, ["--plan", str(write_plan(tmp_path / "plan.yaml", small_corpus, [a, c])), *common]) == 0
    monkeypatch.setattr(sweep, "run_trial", ctrl_c_at_lr(2e-6))
    grown = write_plan(tmp_path / "plan.yaml", small_corpus, [a, b, c])
    assert run_cli(sweep.main, ["--plan", str(grown), *common, "--resume", "--best", str(best)]) == EXIT_INTERRUPTED
    assert "trial 'c'" in best.read_text() and "best so far: trial 'c'" in capsys.readouterr().err


PLANS = sorted((Path(__file__).resolve().parents[1] / "params").glob("sweep_*.yaml"))


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.name)
def test_every_committed_plan_loads_and_validates(plan: Path) -> None:
    base, trials = sweep.load_plan(plan)
    assert base["model"] == "gpt2-124m" and trials


def test_an_out_folder_that_cannot_be_made_is_one_line(small_corpus: Path, tmp_path: Path, capsys) -> None:
    plan = write_plan(tmp_path / "plan.yaml", small_corpus, [{"name": "a"}])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = ["--plan", str(plan), "--out", str(blocker / "sweep.md"), "--token_cap", "64", "--device", "cpu"]
    assert run_cli(sweep.main, args) == EXIT_USER_ERROR
    assert capsys.readouterr().err.startswith("error: cannot create")


def test_a_plain_kill_stops_a_sweep_like_ctrl_c(small_corpus: Path, tmp_path: Path) -> None:
    # started as `nohup ... &` starts it: Ctrl-C ignored, so SIGTERM is the way to stop it
    plan = write_plan(tmp_path / "plan.yaml", small_corpus, [{"name": "a"}, {"name": "b", "lr": 1e-6}])
    out, records = tmp_path / "sweep.md", tmp_path / "sweep.json"
    argv = [sys.executable, "-m", "nanogpt_lib.sweep", "--plan", str(plan), "--out", str(out), "--device", "cpu",
            "--token_cap", "100000000", "--time_cap_s", "600"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
    try:
        assert any(line.startswith("| a |") for line in proc.stdout)  # trial a finished: b runs to its caps
        time.sleep(1.0)  # well inside trial b
        assert proc.poll() is None, "the sweep ended before the kill: this case tested nothing"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert err.strip().startswith("interrupted: trial 'b' was cut off; the 1 finished trials stay in"), err
    assert "Traceback" not in err and [r["trial"] for r in json.loads(records.read_text())] == ["a"]
