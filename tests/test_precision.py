"""Mixed precision on a CPU: ``--amp auto`` follows the CPU's bf16 instructions; bf16 runs resume exactly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from nanogpt_lib import device as device_mod
from nanogpt_lib import train
from nanogpt_lib.errors import UserError, run_cli

from .conftest import tiny_args

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "units, expected", [(["AMX"], "bf16"), (["AVX512-BF16"], "bf16"), (["AMX", "AVX512-BF16"], "bf16"), ([], "off")]
)
def test_auto_picks_bf16_only_on_cpus_with_bf16_matrix_instructions(monkeypatch, units, expected) -> None:
    monkeypatch.setattr(device_mod, "cpu_bf16_units", lambda: units)
    amp, reason = device_mod.amp_decision("auto", CPU)
    assert amp == expected and reason.startswith("auto:")
    assert all(unit in reason for unit in units)


def test_cpu_bf16_units_reads_the_cpu_capabilities(monkeypatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert device_mod.cpu_bf16_units() == ["AVX512-BF16"]
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert device_mod.cpu_bf16_units() == []


def test_explicit_precision_is_taken_as_given_and_fp16_needs_cuda(monkeypatch) -> None:
    monkeypatch.setattr(device_mod, "cpu_bf16_units", lambda: [])
    assert device_mod.amp_decision("bf16", CPU) == ("bf16", "--amp bf16 as given")
    assert device_mod.amp_decision("off", CPU)[0] == "off"
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        device_mod.amp_decision("fp16", CPU)


@pytest.mark.parametrize("units", [["AMX"], []])
def test_the_run_says_which_precision_and_why(small_corpus: Path, tmp_path: Path, monkeypatch, units) -> None:
    monkeypatch.setattr(device_mod, "cpu_bf16_units", lambda: units)
    out = tmp_path / "run"
    argv = [*tiny_args(small_corpus, out, "--steps", "2"), "--amp", "auto"]  # the last --amp wins
    assert run_cli(train.main, argv) == 0
    config = json.loads((out / "run_config.json").read_text())
    expected = "bf16" if units else "off"
    assert config["amp"] == expected and config["amp_reason"].startswith("auto:")
    first_line = (out / "logs" / "train.log").read_text().splitlines()[0]
    assert f"amp {expected} ({config['amp_reason']})" in first_line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["amp"] == expected


def _losses(out: Path) -> list[str]:
    with open(out / "logs" / "train_metrics.csv", newline="") as fh:
        return [r["loss"] for r in csv.DictReader(fh)]


def test_bf16_training_on_cpu_keeps_fp32_state_and_resumes_exactly(small_corpus: Path, tmp_path: Path) -> None:
    bf16 = ("--amp", "bf16", "--save_every", "3")
    straight = tmp_path / "straight"
    assert run_cli(train.main, [*tiny_args(small_corpus, straight, "--steps", "6"), *bf16]) == 0
    parted = tmp_path / "parted"
    assert run_cli(train.main, [*tiny_args(small_corpus, parted, "--steps", "3"), *bf16]) == 0
    assert run_cli(train.main, [*tiny_args(small_corpus, parted, "--steps", "6", "--resume"), *bf16]) == 0
    assert _losses(parted) == _losses(straight)  # the same digits, step by step
    last = torch.load(parted / "checkpoints" / "last.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in last["model"].values())  # master weights stay fp32
    moments = [t for s in last["optimizer"]["state"].values() for k, t in s.items() if k.startswith("exp_avg")]
    assert moments and all(t.dtype == torch.float32 for t in moments)
    fp32 = tmp_path / "fp32"
    assert run_cli(train.main, tiny_args(small_corpus, fp32, "--steps", "6")) == 0
    assert _losses(fp32) != _losses(straight)  # bf16 really ran
