"""Checkpoints written in the background: snapshots, one write in flight, errors surfacing in the training thread."""

from __future__ import annotations

import errno
import json
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from nanogpt_lib import checkpoint
from nanogpt_lib.checkpoint_writer import CheckpointWriter, snapshot

from .test_faults import STEPS, assert_resumes_to_the_straight_losses, start, wait_for
from .test_faults import straight as straight  # the module fixture: a corpus and its uninterrupted losses


def test_snapshot_is_a_copy_that_later_updates_do_not_reach() -> None:
    live = {"w": torch.ones(3), "nested": [torch.zeros(2), {"step": 4}], "pair": (torch.ones(1), "x")}
    copy = snapshot(live)
    live["w"].add_(1)
    live["nested"][0].add_(5)
    assert torch.equal(copy["w"], torch.ones(3)) and torch.equal(copy["nested"][0], torch.zeros(2))
    assert copy["nested"][1] == {"step": 4} and copy["pair"][1] == "x" and isinstance(copy["pair"], tuple)
    model = torch.nn.Linear(4, 4)
    copies: dict = {}
    best = snapshot({"model": model.state_dict()}, copies)
    last = snapshot({"model": model.state_dict(), "pair": live["pair"]}, copies)  # state_dict() makes new views
    assert best["model"]["weight"] is last["model"]["weight"]  # the weights of best.pt and last.pt: copied once
    assert best["model"]["weight"].data_ptr() != model.weight.data_ptr()


def test_writes_happen_in_the_background_one_at_a_time(tmp_path: Path, monkeypatch) -> None:
    gate = threading.Event()
    in_flight, most = [], [0]
    real_save = checkpoint.save

    def slow_save(path, payload):
        in_flight.append(path)
        most[0] = max(most[0], len(in_flight))
        gate.wait(timeout=10)
        real_save(path, payload)
        in_flight.remove(path)

    monkeypatch.setattr(checkpoint, "save", slow_save)
    writer = CheckpointWriter()
    weights = {"w": torch.arange(4.0)}
    began = time.perf_counter()
    writer.submit([(tmp_path / "a.pt", {"kind": "weights", "model": weights})])
    assert time.perf_counter() - began < 5 and writer.busy  # submit did not wait for the disk
    weights["w"].zero_()  # training goes on; the file still gets the state at submit time
    threading.Timer(0.3, gate.set).start()
    writer.submit([(tmp_path / "b.pt", {"kind": "weights", "model": weights})])  # waits for a.pt first
    writer.wait()
    assert most[0] == 1
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["model"]["w"], torch.arange(4.0))
    assert torch.equal(torch.load(tmp_path / "b.pt", weights_only=True)["model"]["w"], torch.zeros(4))


def test_an_error_in_the_writer_is_raised_once_in_the_training_thread(tmp_path: Path, monkeypatch) -> None:
    def disk_full(obj, fh, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    writer = CheckpointWriter()
    writer.submit([(tmp_path / "last.pt", {"kind": "resume", "model": {}})])
    while writer.busy:
        time.sleep(0.01)
    with pytest.raises(OSError, match="No space left") as err:
        writer.raise_if_failed()
    assert err.value.filename == str(tmp_path / "last.pt")
    writer.raise_if_failed()  # reported once
    assert not (tmp_path / "last.pt").exists() and not list(tmp_path.glob(".*.tmp"))


def test_ctrl_c_during_a_background_write_waits_for_it(straight, tmp_path: Path) -> None:
    corpus, expected = straight
    out = tmp_path / "run"
    proc = start(corpus, out, delay_s=2.0)  # each write holds its temporary file for 2 s before the rename
    wait_for(proc, "WRITING")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    last = checkpoint.load(out / "checkpoints" / "last.pt", kind=checkpoint.KIND_RESUME)
    assert last["loop"]["step"] == summary["steps"] < STEPS  # the stop's own save is on disk, complete
    assert not list((out / "checkpoints").glob(".*.tmp"))
    # the run waited for the write before it wrote its summary (not merely the interpreter for the thread at exit)
    assert (out / "summary.json").stat().st_mtime_ns >= (out / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert summary["checkpoint_time_s"] >= 1.0  # the wait held the run up, and was counted
    assert_resumes_to_the_straight_losses(corpus, out, expected)
