"""Data-parallel training under torchrun with gloo on the CPU: two processes of the tiny model against one."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanogpt_lib import checkpoint

from .conftest import ROOT, run_module, tiny_args

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def losses(out: Path) -> dict[int, float]:
    with open(out / "logs" / "train_metrics.csv", newline="") as fh:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(fh)}


def assert_close(a: dict[int, float], b: dict[int, float]) -> None:
    assert a.keys() == b.keys()
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6), step


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same 6 steps: one process at batch 4, and two processes at batch 2 each (saving at step 3)."""
    from .conftest import write_small_corpus

    tmp = tmp_path_factory.mktemp("ddp")
    corpus = write_small_corpus(tmp)
    one, two, digests = tmp / "one", tmp / "two", tmp / "digests"
    digests.mkdir()
    shared = ("--save_every", "3", "--sample_every", "3", "--sampling", "epoch")
    assert run_module("nanogpt_lib.train", *tiny_args(corpus, one, "--batch_size", "4", *shared)).returncode == 0
    two_args = tiny_args(corpus, two, "--batch_size", "2", *shared)
    result = torchrun("tests/ddp_worker.py", str(digests), *two_args)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"corpus": corpus, "one": one, "two": two, "digests": digests, "two_args": two_args}


def test_two_processes_train_as_one_with_their_batches_together(runs) -> None:
    assert_close(losses(runs["two"]), losses(runs["one"]))
    config = json.loads((runs["two"] / "run_config.json").read_text())
    assert config["processes"] == 2 and config["tokens_per_step"] == 2 * 2 * 32 * 2
    log = (runs["two"] / "logs" / "train.log").read_text()
    assert "256 tokens/step (2 x 32 x 2 per process x 2)" in log


def test_both_processes_hold_the_same_parameters(runs) -> None:
    digests = [(runs["digests"] / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]


def test_only_rank_zero_writes_the_run_directory(runs) -> None:
    for name in ("logs/train.log", "samples/samples.txt"):
        ours, single = ((runs[k] / name).read_text() for k in ("two", "one"))
        assert ours.count("step 1/6") == single.count("step 1/6") and ours.count("STEP: ") == single.count("STEP: ")
    summary = json.loads((runs["two"] / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["tokens_seen"] == 6 * 256


def test_a_resume_under_two_processes_continues_exactly(runs, tmp_path: Path) -> None:
    out = tmp_path / "parted"
    flags = [*runs["two_args"]]
    flags[flags.index("--out_dir") + 1] = str(out)
    first = [*flags, "--steps", "3"]
    assert torchrun("-m", "nanogpt_lib.train", *first).returncode == 0
    result = torchrun("-m", "nanogpt_lib.train", *flags, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_close(losses(out), losses(runs["two"]))
    # with another number of processes each one's share of the batches would differ: refused in one line
    single = run_module("nanogpt_lib.train", *flags, "--resume", "--steps", "9")
    assert single.returncode == 2 and "Traceback" not in single.stderr
    assert "trained by 2 process(es) and this run has 1" in single.stderr


def start_group(*flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*TORCHRUN, "-m", "nanogpt_lib.train", *flags], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip


def wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if (out / "logs" / "train_metrics.csv").exists() and max(losses(out), default=0) >= step:
            return
        time.sleep(0.2)
    raise AssertionError(f"step {step} not reached")


def workers_of(proc: subprocess.Popen) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def test_ctrl_c_to_the_group_saves_once_and_every_process_exits(runs, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    flags = [*runs["two_args"]]
    flags[flags.index("--out_dir") + 1] = str(out)
    proc = start_group(*flags, "--steps", "100000", "--save_every", "0", "--sample_every", "0")
    wait_for_step(out, 2, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert err.count("Interrupted; continue with: torchrun --standalone --nproc_per_node=2") == 1
    log = (out / "logs" / "train.log").read_text()
    assert log.count("Stopped by") == 1
    saved = checkpoint.load(out / "checkpoints" / "last.pt", kind=checkpoint.KIND_RESUME)
    assert saved["loop"]["step"] == max(losses(out)) and len(saved["rng"]["ranks"]) == 2


def test_a_process_that_dies_takes_the_group_down_and_the_checkpoint_survives(runs, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    flags = [*runs["two_args"]]
    flags[flags.index("--out_dir") + 1] = str(out)
    proc = start_group(*flags, "--steps", "100000", "--save_every", "2", "--sample_every", "0")
    wait_for_step(out, 4, proc)
    workers = workers_of(proc)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Signal 9 (SIGKILL)" in err  # torchrun names the process that died
    # the survivor either says in one line that the group broke off (when it sees the closed connection first) or is
    # stopped by torchrun: never a traceback of ours
    assert "nanogpt_lib/" not in err
    if "the group broke off" in err:
        assert "error: process 0 of 2: the group broke off" in err and "is intact: run the same torchrun command" in err
    saved = checkpoint.load(out / "checkpoints" / "last.pt", kind=checkpoint.KIND_RESUME)
    assert saved["loop"]["step"] % 2 == 0 and saved["loop"]["step"] >= 2
