"""Fault injection: kill -9, Ctrl-C and SIGTERM, a diverging loss, GPU out-of-memory, a failing disk.

Each test checks what survived on disk and what the user was told.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nanogpt_lib import checkpoint, distributed, session, train
from nanogpt_lib.errors import EXIT_USER_ERROR, UserError, run_cli

from .conftest import ROOT, tiny_args, write_small_corpus

STEPS = 10


def losses(out: Path) -> dict[int, str]:
    with open(out / "logs" / "train_metrics.csv", newline="") as fh:
        return {int(r["step"]): r["loss"] for r in csv.DictReader(fh)}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start(corpus: Path, out: Path, *extra: str, delay_s: float = 0.3) -> subprocess.Popen:
    """The CLI in a subprocess, with checkpoint writes slowed down by ``delay_s``."""
    argv = tiny_args(corpus, out, "--steps", str(STEPS), "--save_every", "1", *extra)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "slow_writer.py"), str(delay_s), *argv],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def wait_for(proc: subprocess.Popen, marker: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if marker in line:
            return
        if time.monotonic() > deadline:
            break
    pytest.fail(f"the run never printed {marker!r}")


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, dict[int, str]]:
    """A corpus and the losses of an uninterrupted run: what every interrupted and resumed run must equal."""
    tmp = tmp_path_factory.mktemp("faults")
    corpus = write_small_corpus(tmp)
    out = tmp / "straight"
    assert run_cli(train.main, tiny_args(corpus, out, "--steps", str(STEPS))) == 0
    return corpus, losses(out)


def assert_resumes_to_the_straight_losses(corpus: Path, out: Path, expected: dict[int, str]) -> None:
    """What a dead run left is usable, and resuming it gives exactly the losses of the uninterrupted run."""
    last = out / "checkpoints" / "last.pt"
    saved_step = checkpoint.load(last, kind=checkpoint.KIND_RESUME)["loop"]["step"] if last.exists() else None
    logged = losses(out) if (out / "logs" / "train_metrics.csv").exists() else {}  # readable after any kill
    assert run_cli(train.main, tiny_args(corpus, out, "--steps", str(STEPS), "--resume")) == 0
    resumed = losses(out)
    assert sorted(resumed) == sorted(expected)
    # equal to the last printed digit on a quiet machine; under heavy load MKL's thread split can move the 7th digit
    assert all(float(resumed[s]) == pytest.approx(float(expected[s]), rel=1e-5) for s in expected)
    assert not list(out.glob("checkpoints/.*.tmp"))  # a killed write's temporary file is cleaned up
    resumes = json.loads((out / "run_config.json").read_text())["resumes"]
    if saved_step is None:
        assert resumes == []  # nothing to resume from: a fresh start, said in the log
    else:
        assert len(resumes) == 1 and resumes[0]["step"] == saved_step
        assert resumes[0].get("steps_redone", 0) == max([0, *logged]) - saved_step


@pytest.mark.parametrize("moment", ["inside a checkpoint write", "random 1", "random 2", "random 3"])
def test_kill_9_at_any_moment_then_resume(straight, tmp_path: Path, moment: str) -> None:
    corpus, expected = straight
    out = tmp_path / "run"
    proc = start(corpus, out)
    if moment == "inside a checkpoint write":
        wait_for(proc, "WRITING")
        wait_for(proc, "WRITING")  # the second write: last.pt already exists and must survive
    else:  # after a random step before the last, a random part of a step later: in a step, a write, or between
        rng = random.Random(moment)
        wait_for(proc, f"step {rng.randint(1, STEPS - 1)}/")
        time.sleep(rng.uniform(0.0, 0.3))
    assert proc.poll() is None, "the run ended before the kill: this case tested nothing"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL  # it died by the kill, not of its own accord
    assert_resumes_to_the_straight_losses(corpus, out, expected)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_save_and_stop(straight, tmp_path: Path, sig: int, code: int) -> None:
    corpus, expected = straight
    out = tmp_path / "run"
    proc = start(corpus, out, delay_s=0.0)
    wait_for(proc, "step 3/")
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "stopping after this step" in stderr and "--resume" in stderr and "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == signal.Signals(sig).name
    last = checkpoint.load(out / "checkpoints" / "last.pt", kind=checkpoint.KIND_RESUME)
    assert last["loop"]["step"] == summary["steps"] < STEPS
    log = (out / "logs" / "train.log").read_text()
    assert f"Stopped by {signal.Signals(sig).name} after step {summary['steps']}" in log
    assert_resumes_to_the_straight_losses(corpus, out, expected)


def test_second_ctrl_c_exits_at_once(straight, tmp_path: Path) -> None:
    corpus, _ = straight
    out = tmp_path / "run"
    proc = start(corpus, out, delay_s=30.0)  # every checkpoint write hangs for 30 s
    wait_for(proc, "WRITING")  # stuck inside the first write
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert time.monotonic() - began < 10
    assert proc.returncode == 130 and "SIGINT again: exiting at once" in stderr


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(straight, tmp_path: Path, monkeypatch, capsys) -> None:
    corpus, _ = straight
    out = tmp_path / "run"
    real = session.accumulate_gradients
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(session, "accumulate_gradients", poisoned)
    argv = tiny_args(corpus, out, "--steps", str(STEPS), "--save_every", "2")
    assert run_cli(train.main, argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "the loss became nan at step 4" in err and "last.pt (step 2) is untouched" in err and "bf16" in err
    assert checkpoint.load(out / "checkpoints" / "last.pt", kind=checkpoint.KIND_RESUME)["loop"]["step"] == 2
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"


def test_out_of_memory_suggests_the_same_tokens_in_smaller_batches(
    straight, tmp_path: Path, monkeypatch, capsys
) -> None:
    corpus, _ = straight

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(session, "accumulate_gradients", out_of_memory)
    argv = tiny_args(corpus, tmp_path / "run", "--batch_size", "8", "--grad_accum", "2")
    assert run_cli(train.main, argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "out of GPU memory" in err and "--batch_size 4 --grad_accum 4 (512 tokens per step, the same)" in err


def test_failing_disk_keeps_the_previous_checkpoint(straight, tmp_path: Path, monkeypatch, capsys) -> None:
    corpus, _ = straight
    out = tmp_path / "run"
    assert run_cli(train.main, tiny_args(corpus, out, "--steps", "2")) == 0
    last = out / "checkpoints" / "last.pt"
    before = digest(last)

    def disk_full(obj, fh, *args, **kwargs):
        fh.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    assert run_cli(train.main, tiny_args(corpus, out, "--steps", "4", "--save_every", "1", "--resume")) == 2
    err = capsys.readouterr().err
    assert f"could not write {out / 'checkpoints'}" in err and "No space left on device" in err
    assert digest(last) == before
    assert not list((out / "checkpoints").glob(".*.tmp"))


def test_damaged_format_version_is_refused(straight, tmp_path: Path, capsys) -> None:
    corpus, _ = straight
    out = tmp_path / "run"
    assert run_cli(train.main, tiny_args(corpus, out, "--steps", "1")) == 0
    last = out / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    torch.save({**ckpt, "format_version": 99}, last)
    assert run_cli(train.main, tiny_args(corpus, out, "--resume")) == EXIT_USER_ERROR
    assert "format version 99" in capsys.readouterr().err


def test_the_printed_continue_command_works_as_printed(straight, tmp_path: Path) -> None:
    import shlex

    corpus, expected = straight
    out = tmp_path / "run"
    proc = start(corpus, out, "--overwrite", delay_s=0.0)  # as make sanity starts a run
    wait_for(proc, "step 3/")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    line = next(line for line in stderr.splitlines() if line.startswith("Interrupted; continue with: "))
    argv = shlex.split(line.removeprefix("Interrupted; continue with: "))
    assert argv[:3] == ["python", "-m", "nanogpt_lib.train"] and "--overwrite" not in argv
    again = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert sorted(losses(out)) == sorted(expected)


@pytest.mark.parametrize("where", ["building the session", "opening the run files"])
def test_a_failed_set_up_leaves_no_process_group_behind(tmp_path: Path, monkeypatch, capsys, where: str) -> None:
    closed = []

    class Group(distributed.Group):  # a group of one that records being closed
        def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(session.distributed, "join", lambda device_type: Group())
    if where == "building the session":
        monkeypatch.setattr(session, "load_corpus", lambda cfg: (_ for _ in ()).throw(UserError("no corpus")))
    else:
        monkeypatch.setattr(train.Trainer, "_open_run_files", lambda self: (_ for _ in ()).throw(UserError("no log")))
    corpus = write_small_corpus(tmp_path)
    assert run_cli(train.main, tiny_args(corpus, tmp_path / "run")) == EXIT_USER_ERROR
    assert closed == [True] and "error: no " in capsys.readouterr().err
