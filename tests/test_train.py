"""The training loop end to end on the tiny model: run directory, early stop, accumulation, resume, sampling."""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
from pathlib import Path

import pytest
import torch

from nanogpt_lib import checkpoint, evaluate, overview, runlog
from nanogpt_lib.config import TrainConfig
from nanogpt_lib.errors import EXIT_USER_ERROR, run_cli
from nanogpt_lib.model import GPT, model_config
from nanogpt_lib.optim import lr_at
from nanogpt_lib.records import changed_options
from nanogpt_lib.rundir import RunDir, phases_for
from nanogpt_lib.runlog import METRICS_COLUMNS
from nanogpt_lib.step import accumulate_gradients
from nanogpt_lib.train import main

from .conftest import run_module, tiny_args

# Losses of the first ten steps of `tiny_args(..., "--steps", "10")` on the 20,000-character corpus, on CPU in
# fp32. A change to the model, the initialisation, the batches or the optimizer moves them: update them only
# for a change that is meant to alter training, and say so in the commit.
PINNED_LOSSES = [10.8499, 10.599924, 10.428408, 10.429033, 10.33956, 10.256664, 10.102001, 9.8468704, 9.6290398,
                 9.3858109]  # fmt: skip


def train(*argv: str) -> int:
    return run_cli(main, list(argv))


def read_metrics(out_dir: Path) -> list[dict[str, str]]:
    with open(out_dir / "logs" / "train_metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_directory_holds_every_file(small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(*tiny_args(small_corpus, out, "--save_every", "3", "--sample_every", "3", "--num_prompts", "2")) == 0

    config = json.loads((out / "run_config.json").read_text())
    assert config["train_config"]["seed"] == 7 and config["train_config"]["steps"] == 6
    assert config["command"].startswith("python -m nanogpt_lib.train --input_file")
    assert config["n_params"] == GPT(model_config("tiny")).num_params()
    assert {"python", "torch", "tiktoken"} <= set(config["versions"]) and config["device_name"].startswith("CPU")
    assert "git_commit" in config and config["resumes"] == []

    log = (out / "logs" / "train.log").read_text().splitlines()
    step_lines = [line for line in log if line.startswith("step ")]
    assert len(step_lines) == 6
    assert re.fullmatch(
        r"step 6/6 \| loss \d+\.\d{6} \| lr 1\.00e-03 \| tok/s \d+\.\d \| elapsed \d+\.\ds", step_lines[-1]
    )
    assert log[-1] == "Training complete."
    assert any(line.startswith("New best loss") for line in log)

    rows = read_metrics(out)
    assert list(rows[0]) == list(METRICS_COLUMNS)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [int(r["tokens_seen"]) for r in rows] == [128 * s for s in range(1, 7)]
    assert all(float(r["tok_per_s"]) > 0 for r in rows[1:])

    samples = (out / "samples" / "samples.txt").read_text()
    assert samples.count("STEP: 3 ") == 2 and samples.count("STEP: 6 ") == 2
    assert samples.count("PROMPT:\nBIANCA:\n") == 4 and samples.count("OUTPUT:\nBIANCA:\n") == 4

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 6 and summary["tokens_seen"] == 768
    assert summary["target_step"] is None and summary["full_corpus_loss"] is None
    assert summary["best_step_loss"] == pytest.approx(min(float(r["loss"]) for r in rows), rel=1e-7)
    assert summary["train_time_s"] > 0 and summary["warmup_time_s"] > 0

    best = checkpoint.load(out / "checkpoints" / "best.pt", kind=checkpoint.KIND_WEIGHTS)
    last = checkpoint.load(out / "checkpoints" / "last.pt", kind=checkpoint.KIND_RESUME)
    assert best["step"] == 6 and last["loop"]["step"] == 6
    assert not any(k.startswith("_orig_mod.") for k in last["model"])


def test_pinned_first_ten_losses(small_corpus: Path, tmp_path: Path) -> None:
    assert train(*tiny_args(small_corpus, tmp_path / "run", "--steps", "10")) == 0
    losses = [float(r["loss"]) for r in read_metrics(tmp_path / "run")]
    assert losses == pytest.approx(PINNED_LOSSES, abs=1e-3)


@pytest.mark.parametrize("stop_on", ["step", "corpus"])
def test_early_stop_at_target_writes_summary(small_corpus: Path, tmp_path: Path, stop_on: str) -> None:
    out = tmp_path / "run"
    assert train(*tiny_args(small_corpus, out, "--steps", "40", "--target_loss", "10.6", "--stop_on", stop_on)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "target_reached"
    assert summary["steps"] < 40
    assert summary["target_step_loss"] <= 10.6
    assert summary["full_corpus_loss"] is not None and math.isfinite(summary["full_corpus_loss"])
    if stop_on == "corpus":
        assert summary["stopped_by"] == "full_corpus_loss" and summary["full_corpus_loss"] <= 10.6
        log = (out / "logs" / "train.log").read_text()
        assert "evaluated because the mean step loss of the last 1 steps" in log
    else:
        assert summary["stopped_by"] == "step_loss" and summary["target_step"] == summary["steps"]
    log = (out / "logs" / "train.log").read_text()
    assert "Target reached: " in log and "Full-corpus loss" in log and log.endswith("Training complete.\n")
    best = checkpoint.load(out / "checkpoints" / "best.pt", kind=checkpoint.KIND_WEIGHTS)
    assert best["step"] == summary["steps"] and "target reached" in best["reason"]
    assert f"STEP: {summary['steps']} " in (out / "samples" / "samples.txt").read_text()


def test_gradient_accumulation_equals_the_big_batch() -> None:
    x = torch.randint(0, 50257, (4, 16), generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 50257, (4, 16), generator=torch.Generator().manual_seed(1))
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def grads(micro_batches: list, accum: int) -> tuple[float, list[torch.Tensor]]:
        torch.manual_seed(0)
        model = GPT(model_config("tiny"))
        it = iter(micro_batches)
        loss = accumulate_gradients(model, lambda: next(it), torch.device("cpu"), "off", scaler, accum)
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    big_loss, big = grads([(x, y)], 1)
    acc_loss, acc = grads([(x[:2], y[:2]), (x[2:], y[2:])], 2)
    assert acc_loss == pytest.approx(big_loss, rel=1e-6)
    for a, b in zip(acc, big, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_resume_continues_exactly(small_corpus: Path, tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(*tiny_args(small_corpus, straight)) == 0
    assert train(*tiny_args(small_corpus, split, "--steps", "3")) == 0
    assert train(*tiny_args(small_corpus, split, "--resume")) == 0

    assert [r["loss"] for r in read_metrics(split)] == [r["loss"] for r in read_metrics(straight)]
    a = checkpoint.load(straight / "checkpoints" / "last.pt", kind=checkpoint.KIND_RESUME)
    b = checkpoint.load(split / "checkpoints" / "last.pt", kind=checkpoint.KIND_RESUME)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["data"]["tokens_seen"] == b["data"]["tokens_seen"] == 6 * 128
    config = json.loads((split / "run_config.json").read_text())
    assert [r["step"] for r in config["resumes"]] == [3]
    assert config["resumes"][0]["changed"] == {"steps": [3, 6]}  # what the resume changed; --resume itself is not
    log = (split / "logs" / "train.log").read_text()
    assert "Resumed from" in log and "Options changed at this resume (recorded in run_config.json): steps 3 -> 6" in log
    summary = json.loads((split / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["tokens_seen"] == 768


def test_resume_drops_metrics_rows_written_after_the_checkpoint(small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(*tiny_args(small_corpus, out, "--steps", "3")) == 0
    with open(out / "logs" / "train_metrics.csv", "a") as fh:  # what a run killed after step 4 leaves behind
        fh.write("4,9.9,0.001,,512,0.1,100,1.0,\n")
    assert train(*tiny_args(small_corpus, out, "--resume", "--steps", "5")) == 0
    assert [int(r["step"]) for r in read_metrics(out)] == [1, 2, 3, 4, 5]


def test_resume_without_a_checkpoint_starts_fresh_and_says_so(small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(*tiny_args(small_corpus, out, "--steps", "2", "--resume")) == 0
    assert "No checkpoint at" in (out / "logs" / "train.log").read_text()


def test_learning_rate_schedule() -> None:
    cfg = TrainConfig(steps=100, lr=1e-3, min_lr=1e-4, warmup_steps=10, lr_schedule="cosine").schedule
    assert lr_at(1, cfg) == pytest.approx(1e-4) and lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(5.5e-4) and lr_at(100, cfg) == pytest.approx(1e-4)
    constant = TrainConfig(lr=3e-4).schedule
    assert lr_at(1, constant) == lr_at(10_000, constant) == 3e-4
    early = TrainConfig(steps=100_000, lr=1e-3, min_lr=1e-4, warmup_steps=10, lr_schedule="cosine", decay_steps=100)
    early = early.schedule
    assert lr_at(55, early) == pytest.approx(5.5e-4)
    assert lr_at(100, early) == lr_at(90_000, early) == pytest.approx(1e-4)  # stays at min_lr after decay_steps


def test_sample_cli_prints_only_text_and_is_deterministic(small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(*tiny_args(small_corpus, out, "--steps", "2")) == 0
    args = ("--checkpoint", str(out / "checkpoints" / "best.pt"), "--prompt", "ROMEO:\\n", "--max_new_tokens", "12",
            "--seed", "3", "--device", "cpu")  # fmt: skip
    first, second = run_module("nanogpt_lib.sample", *args), run_module("nanogpt_lib.sample", *args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and first.stdout.startswith("ROMEO:\n")
    assert "loaded" in first.stderr and "loaded" not in first.stdout
    other = run_module("nanogpt_lib.sample", *args[:-4], "--seed", "4", "--device", "cpu")
    assert other.stdout != first.stdout


def test_sanity_command_runs_verbatim_on_cpu(course_file: Path, tmp_path: Path) -> None:
    """The reference sanity command, shortened to 2 steps and the tiny model; the 124M version is in the README."""
    result = run_module(
        "nanogpt_lib.train", "--input_file", str(course_file), "--out_dir", str(tmp_path / "out_sanity"),
        "--steps", "2", "--batch_size", "4", "--seq_len", "128", "--grad_accum", "1", "--lr", "3e-4",
        "--log_every", "10", "--save_every", "100", "--sample_every", "100", "--model", "tiny",
        "--max_new_tokens", "8",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "step 2/2 | loss" in result.stdout and "Training complete." in result.stdout


def test_extra_prompts_are_sampled_at_every_event(small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    extra = ("--extra_prompts", "ROMEO:\\n|First Citizen:\\n", "--steps", "2", "--sample_every", "1")
    assert train(*tiny_args(small_corpus, out, *extra)) == 0
    samples = (out / "samples" / "samples.txt").read_text()
    for prompt in ("BIANCA:", "ROMEO:", "First Citizen:"):
        assert samples.count(f"PROMPT:\n{prompt}\n") == 2  # steps 1 and 2


@pytest.mark.parametrize("scale", [1e-4, 10.0])  # gradients far below and far above the clipping norm
def test_clip_gradients_equals_clip_grad_norm(scale: float) -> None:
    from nanogpt_lib.step import clip_gradients

    torch.manual_seed(0)
    a, b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    b.load_state_dict(a.state_dict())
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        p.grad = torch.randn_like(p) * scale
        q.grad = p.grad.clone()
    expected = torch.nn.utils.clip_grad_norm_(a.parameters(), 1.0)
    assert torch.equal(clip_gradients(b, 1.0, torch.device("cpu")), expected)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_the_continue_command_resumes_whatever_started_the_run(tmp_path: Path) -> None:
    from nanogpt_lib.config import parse_train_args
    from nanogpt_lib.distributed import Group
    from nanogpt_lib.train import continue_command

    config = tmp_path / "recipe.yaml"
    config.write_text("overwrite: true\nsteps: 9\n", encoding="utf-8")
    for argv in (["--steps", "9", "--overw"], ["--config", str(config)], ["--conf", str(config), "--overwrite"]):
        command = continue_command(argv, parse_train_args(argv, prog="t", description="t"), Group())
        words = shlex.split(command)
        assert words[:3] == ["python", "-m", "nanogpt_lib.train"] and words[-1] == "--resume"
        again = parse_train_args(words[3:], prog="t", description="t")  # parses: no contradiction left
        assert again.resume and not again.overwrite and again.steps == 9
    two = continue_command(["--steps", "9"], parse_train_args(["--steps", "9"], prog="t", description="t"), Group(0, 2))
    assert two.startswith("torchrun --standalone --nproc_per_node=2 -m nanogpt_lib.train --steps 9")


def test_evaluate_cli_gives_the_loops_full_corpus_loss_at_phase_0_and_others_elsewhere(
    small_corpus: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert train(*tiny_args(small_corpus, out, "--eval_every", "6")) == 0
    logged = float(json.loads((out / "summary.json").read_text())["full_corpus_loss"])
    capsys.readouterr()  # the training run's own output
    args = ["--checkpoint", str(out / "checkpoints" / "last.pt"), "--device", "cpu"]  # the rest from run_config.json
    assert evaluate.main([*args, "--phases", "0,5"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines()[2:]]
    losses = {int(row[1]): float(row[3]) for row in rows}
    assert losses[0] == pytest.approx(logged, abs=1e-6) and losses[5] != losses[0]
    assert run_cli(evaluate.main, [*args, "--phases", "32"]) == EXIT_USER_ERROR
    assert "--phases must be integers in 0..31" in capsys.readouterr().err

    # --out: the same table in the run directory, which the report reads and copies with the evidence
    phases = RunDir(out).phases
    assert evaluate.main([*args, "--phases", "0,5", "--out", str(phases)]) == 0
    assert runlog.read_phase_table(phases) == pytest.approx(losses, abs=1e-6)
    assert "Command: `python -m nanogpt_lib.evaluate --checkpoint" in phases.read_text()
    assert overview.phases_cell(phases) == f"{losses[0]:.4f} / {losses[5]:.4f} (phase 5)"  # the worst other phase
    assert phases in RunDir(out).evidence()
    # the phases a run is measured at: 0, 64, 128, 192, or the quarters of a window too short for them
    assert phases_for(256) == phases_for(1024) == [0, 64, 128, 192]
    assert phases_for(32) == [0, 8, 16, 24] and phases_for(2) == [0, 1]
    assert evaluate.parse_phases("standard", 32) == [0, 8, 16, 24]  # what make phases asks for


def test_a_resume_reports_only_the_options_it_really_changed() -> None:
    before = TrainConfig(out_dir="out/run", steps=100).to_dict()
    del before["aligned_after_passes"]  # a run started before the option existed: it counts as its default
    same = TrainConfig(out_dir="./out/run", steps=100, resume=True).to_dict()
    assert changed_options(before, same) == {}
    longer = TrainConfig(out_dir="out/run", steps=200, aligned_after_passes=3, sampling="epoch").to_dict()
    assert changed_options(before, longer) == {
        "steps": [100, 200],
        "sampling": ["random", "epoch"],
        "aligned_after_passes": [0, 3],
    }
    assert changed_options({}, longer) == {}  # nothing recorded before: nothing to compare
