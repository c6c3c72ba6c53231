"""Mixed precision on a CPU: ``--amp auto`` follows the CPU's bf16 instructions; bf16 and fp16 (with its gradient
scaler, the path of 7.x CUDA cards) run for real here and resume exactly."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nanogpt_lib import device as device_mod
from nanogpt_lib import train
from nanogpt_lib.config import TrainConfig
from nanogpt_lib.device import Decision, Machine
from nanogpt_lib.errors import UserError, run_cli
from nanogpt_lib.model import GPT, model_config
from nanogpt_lib.session import Session

from .conftest import tiny_args

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "units, expected", [(["AMX"], "bf16"), (["AVX512-BF16"], "bf16"), (["AMX", "AVX512-BF16"], "bf16"), ([], "off")]
)
def test_auto_picks_bf16_only_on_cpus_with_bf16_matrix_instructions(units, expected) -> None:
    amp, reason, _ = dataclasses.astuple(device_mod.amp_decision("auto", Machine(CPU, "a CPU", bf16_units=units)))
    assert amp == expected and reason.startswith("auto:")
    assert all(unit in reason for unit in units)


def test_cpu_bf16_units_reads_the_cpu_capabilities(monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert device_mod.cpu_bf16_units() == ["AVX512-BF16"]
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert device_mod.cpu_bf16_units() == []


def test_explicit_precision_is_taken_as_given_and_fp16_off_cuda_is_warned_about_or_refused() -> None:
    cpu = Machine(CPU, "a CPU")
    assert device_mod.amp_decision("bf16", cpu) == Decision("bf16", "--amp bf16 as given")
    assert device_mod.amp_decision("off", cpu).value == "off"
    fp16 = device_mod.amp_decision("fp16", cpu)
    assert fp16.value == "fp16" and "slower" in fp16.warning
    with pytest.raises(UserError, match="needs a CUDA GPU or the CPU"):
        device_mod.amp_decision("fp16", Machine(torch.device("mps"), "Apple MPS"))


@pytest.mark.parametrize("units", [["AMX"], []])
def test_the_run_says_which_precision_and_why(small_corpus: Path, tmp_path: Path, monkeypatch, units) -> None:
    monkeypatch.setattr(device_mod, "cpu_bf16_units", lambda: units)
    out = tmp_path / "run"
    argv = [*tiny_args(small_corpus, out, "--steps", "2"), "--amp", "auto"]  # the last --amp wins
    assert run_cli(train.main, argv) == 0
    config = json.loads((out / "run_config.json").read_text())
    expected = "bf16" if units else "off"
    assert config["amp"] == expected and config["amp_reason"].startswith("auto:")
    assert config["plan"]["amp"] == expected and config["plan"]["amp_reason"] == config["amp_reason"]
    lines = (out / "logs" / "train.log").read_text().splitlines()
    precision = {"bf16": "bf16", "off": "fp32"}[expected]
    assert lines[1] == f"Precision: {precision} ({config['amp_reason']})"  # after the device, before step 1
    assert any(f"amp {expected} ({config['amp_reason']})" in line for line in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["amp"] == expected


def _losses(out: Path) -> list[str]:
    with open(out / "logs" / "train_metrics.csv", newline="") as fh:
        return [r["loss"] for r in csv.DictReader(fh)]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_on_cpu_keeps_fp32_state_and_resumes_exactly(small_corpus: Path, tmp_path: Path, amp) -> None:
    mixed = ("--amp", amp, "--save_every", "3")
    straight = tmp_path / "straight"
    assert run_cli(train.main, [*tiny_args(small_corpus, straight, "--steps", "6"), *mixed]) == 0
    parted = tmp_path / "parted"
    assert run_cli(train.main, [*tiny_args(small_corpus, parted, "--steps", "3"), *mixed]) == 0
    assert run_cli(train.main, [*tiny_args(small_corpus, parted, "--steps", "6", "--resume"), *mixed]) == 0
    assert _losses(parted) == _losses(straight)  # the same digits, step by step
    scalers = [torch.load(run / "checkpoints" / "last.pt", weights_only=True)["scaler"] for run in (straight, parted)]
    assert scalers[0] == scalers[1]  # the gradient scaler's state (fp16) survived the resume exactly
    assert bool(scalers[0]) == (amp == "fp16")
    last = torch.load(parted / "checkpoints" / "last.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in last["model"].values())  # master weights stay fp32
    moments = [t for s in last["optimizer"]["state"].values() for k, t in s.items() if k.startswith("exp_avg")]
    assert moments and all(t.dtype == torch.float32 for t in moments)
    fp32 = tmp_path / "fp32"
    assert run_cli(train.main, tiny_args(small_corpus, fp32, "--steps", "6")) == 0
    assert _losses(fp32) != _losses(straight)  # the lower precision really ran


def test_an_fp16_step_whose_gradients_overflow_is_skipped_and_the_scale_halved() -> None:
    torch.manual_seed(0)
    model = GPT(model_config("tiny"))
    cfg = TrainConfig(model="tiny", batch_size=2, seq_len=16, grad_accum=1, grad_clip=1.0)
    tokens = np.arange(1000) % model.config.vocab_size
    session = Session.of_model(cfg, model, model, tokens, CPU, "fp16")
    before = [p.detach().clone() for p in model.parameters()]
    session.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # loss x scale overflows fp32: every grad is inf
    session.step(1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # the update was skipped
    assert session.scaler.get_scale() == 2.0**126
    session.scaler = torch.amp.GradScaler("cpu")
    session.step(1)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # a normal scale steps
