"""What a run does on each kind of machine students have, decided before step 1: precision, compilation and the
micro-batch, on fake cards (their capability, memory, platform, Triton or not), so that every branch runs on a CPU;
an NVIDIA GPU that this torch cannot use; a compilation that fails at the first step."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanogpt_lib import batchfit, device, evaluate, plan, recipes, session
from nanogpt_lib.batchfit import memory_probe, micro_batch_decision
from nanogpt_lib.config import TrainConfig
from nanogpt_lib.device import Machine, amp_decision, compile_decision
from nanogpt_lib.errors import EXIT_USER_ERROR, UserError, run_cli
from nanogpt_lib.train import main as train_main

from .conftest import ROOT, run_module, tiny_args

CUDA = torch.device("cuda")
GIB = 2**30

# name: (the fake card, the precision auto picks, whether auto compiles, the most sequences of 1,024 tokens that its
# stand-in model lets through before raising torch's out-of-memory error)
CARDS = {
    "T4 on Colab": (Machine(CUDA, "Tesla T4", "linux", (7, 5), 15 * GIB, triton=True), "fp16", True, 6),
    "RTX 4060 Ti 16 GB, Windows": (
        Machine(CUDA, "NVIDIA GeForce RTX 4060 Ti", "win32", (8, 9), 16 * GIB, triton=False), "bf16", False, 8),
    "RTX 4060 Ti 8 GB, Windows": (
        Machine(CUDA, "NVIDIA GeForce RTX 4060 Ti", "win32", (8, 9), 8 * GIB, triton=False), "bf16", False, 3),
    "A100 40 GB": (Machine(CUDA, "NVIDIA A100-SXM4-40GB", "linux", (8, 0), 40 * GIB, triton=True), "bf16", True, 16),
    "H100 80 GB": (Machine(CUDA, "NVIDIA H100 80GB HBM3", "linux", (9, 0), 80 * GIB, triton=True), "bf16", True, 40),
    "GTX 1080": (Machine(CUDA, "NVIDIA GeForce GTX 1080", "linux", (6, 1), 8 * GIB, triton=True), "off", False, 2),
}  # fmt: skip


class OutOfMemoryAbove(torch.nn.Module):
    """A stand-in for the model on a card: a forward of more than ``limit`` sequences raises torch's own
    out-of-memory error, as the CUDA allocator does."""

    def __init__(self, limit: int):
        super().__init__()
        self.config = type("Config", (), {"vocab_size": 50})()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.limit, self.asked = limit, []

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[None, torch.Tensor]:
        self.asked.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(x)} GiB")
        return None, self.weight * x.float().mean()


def fit_on(card: Machine, limit: int, started_with: int | None = None, sequences: int = 16):
    model = OutOfMemoryAbove(limit)
    fits = memory_probe(model, 1024, torch.device("cpu"), "off", card.memory_bytes, held_bytes=1024)
    return micro_batch_decision("auto", sequences, 1024, card, fits, started_with), model


@pytest.mark.parametrize("name", list(CARDS))
def test_each_card_gets_its_precision_compilation_and_micro_batch_with_the_reasons(name: str) -> None:
    card, amp, compiles, limit = CARDS[name]
    precision = amp_decision("auto", card)
    assert precision.value == amp and card.card in precision.reason and precision.warning is None
    assert f"compute capability {card.capability[0]}.{card.capability[1]}" in precision.reason
    compiled = compile_decision("auto", card)
    assert compiled.value is compiles and compiled.reason.startswith("auto:")
    if card.platform == "win32":
        assert "no Triton" in compiled.reason and "Windows" in compiled.reason
    decision, model = fit_on(card, limit)
    batch, accum = decision.value
    assert batch * accum == 16  # the recipe's tokens per step, exactly
    assert batch == max(b for b in (16, 8, 4, 2, 1) if b <= limit)  # the largest exact micro-batch that fits
    assert model.asked == [b for b in (16, 8, 4, 2, 1) if b >= batch]  # largest first, stopping at the first fit
    assert decision.reason.startswith("auto: the largest that fits") and card.card in decision.reason
    assert model.weight.grad is None  # each try gives its gradients back


def test_bf16_asked_on_a_card_that_only_emulates_it_runs_with_a_warning() -> None:
    t4 = CARDS["T4 on Colab"][0]
    asked = amp_decision("bf16", t4)
    assert asked.value == "bf16" and "only emulates bf16" in asked.warning and "fp16" in asked.warning
    assert amp_decision("bf16", CARDS["A100 40 GB"][0]).warning is None


def test_a_resume_keeps_its_micro_batch_and_refits_on_a_smaller_card_saying_so() -> None:
    h100, a4060 = CARDS["H100 80 GB"][0], CARDS["RTX 4060 Ti 8 GB, Windows"][0]
    kept, model = fit_on(h100, limit=40, started_with=8)
    assert kept.value == (8, 2) and kept.warning is None and model.asked == [8]  # never tries a larger one
    smaller, _ = fit_on(a4060, limit=3, started_with=8)
    assert smaller.value == (2, 8) and "does not fit" in smaller.warning and "the same 16,384 tokens" in smaller.warning


def test_no_micro_batch_fits_is_one_line() -> None:
    with pytest.raises(UserError, match="not even one sequence"):
        fit_on(CARDS["GTX 1080"][0], limit=0)


def test_a_peak_that_leaves_less_than_a_tenth_of_the_card_free_does_not_fit(monkeypatch) -> None:
    monkeypatch.setattr(batchfit, "peak_bytes", lambda device: 95 * GIB)
    for limit_gib, fits in ((100, False), (106, True)):
        probe = memory_probe(OutOfMemoryAbove(64), 8, torch.device("cpu"), "off", limit_gib * GIB, held_bytes=0)
        assert probe(1) is fits


def test_on_a_cpu_auto_keeps_micro_batches_small_and_tokens_per_step_exact() -> None:
    cpu = Machine(torch.device("cpu"), "a CPU")
    assert micro_batch_decision("auto", 16, 1024, cpu).value == (2, 8)
    assert micro_batch_decision("auto", 64, 64, cpu).value == (32, 2)
    assert micro_batch_decision("auto", 3, 1024, cpu).value == (1, 3)
    assert micro_batch_decision(4, 16, 1024, cpu).value == (4, 4)


def test_compilation_on_a_cpu_stays_eager_as_measured() -> None:
    cpu = Machine(torch.device("cpu"), "a CPU", bf16_units=("AMX",))
    decided = compile_decision("auto", cpu)
    root = Path(__file__).resolve().parent.parent
    assert decided.value is False and all(
        b in decided.reason and (root / b).is_file() for b in device.CPU_COMPILE_BENCHES
    )
    assert compile_decision("auto", Machine(torch.device("mps"), "Apple MPS")).value is False
    assert compile_decision(True, cpu).value is True  # as given: the first step falls back to eager if need be
    assert compile_decision(False, CARDS["H100 80 GB"][0]).value is False


def test_the_options_need_tokens_per_step_for_auto_and_an_exact_division() -> None:
    with pytest.raises(UserError, match="give them with --tokens_per_step"):
        TrainConfig(batch_size="auto").validate()
    with pytest.raises(UserError, match="does not divide"):
        TrainConfig(batch_size=5, seq_len=256, tokens_per_step=4096).validate()
    with pytest.raises(UserError, match="multiple of --seq_len"):
        TrainConfig(seq_len=256, tokens_per_step=1000).validate()
    cfg = TrainConfig(batch_size="auto", seq_len=256, tokens_per_step=4096)
    cfg.validate()
    assert cfg.with_micro_batch(4).grad_accum == 4 and cfg.with_micro_batch(16).grad_accum == 1
    assert TrainConfig(batch_size=2, grad_accum=3, seq_len=8).with_micro_batch(2).grad_accum == 3
    assert TrainConfig.from_dict({"compile": "auto", "batch_size": "auto"}).compile == "auto"
    assert TrainConfig.from_dict({"compile": "true"}).compile is True


# ---------------------------------------------------------------------- an NVIDIA GPU that this torch cannot use


def fake_nvidia_smi(folder: Path) -> Path:
    """An ``nvidia-smi`` that answers as the driver of an RTX 4060 Ti does."""
    script = folder / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--query-gpu=name" ]; then echo "NVIDIA GeForce RTX 4060 Ti"; exit 0; fi\n'
        'echo "| NVIDIA-SMI 570.86    Driver Version: 570.86    CUDA Version: 12.8 |"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


@pytest.mark.skipif(os.name == "nt", reason="the fake nvidia-smi is a POSIX shell script")
def test_nvidia_smi_is_read_for_the_card_and_the_drivers_cuda(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    assert device.nvidia_gpu() == ("NVIDIA GeForce RTX 4060 Ti", (12, 8))


def test_a_cpu_only_torch_beside_a_gpu_is_the_first_line_of_the_run(small_corpus, tmp_path, monkeypatch) -> None:
    for module in (device, plan):
        monkeypatch.setattr(module, "nvidia_gpu", lambda: ("NVIDIA GeForce RTX 4060 Ti", (12, 8)))
    monkeypatch.setattr(torch.version, "cuda", None)  # what PyPI's torch wheel for Windows is
    out = tmp_path / "run"
    assert run_cli(train_main, tiny_args(small_corpus, out, "--steps", "1")) == 0  # it still trains
    first = (out / "logs" / "train.log").read_text().splitlines()[0]
    assert first.startswith("WARNING: training on the CPU") and "NVIDIA GeForce RTX 4060 Ti" in first
    version = torch.__version__.split("+")[0]
    assert f"pip install torch=={version} --index-url https://download.pytorch.org/whl/cu128" in first
    assert json.loads((out / "run_config.json").read_text())["plan"]["warnings"] == [first]
    with pytest.raises(UserError, match="CPU-only build.*download.pytorch.org/whl/cu128"):
        device.pick_device("cuda")


def test_no_warning_without_an_nvidia_gpu(monkeypatch) -> None:
    assert device.unused_gpu(None) is None
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    line = device.unused_gpu(("a GPU", (12, 4)))
    assert "built for CUDA 12.8 and the driver supports CUDA 12.4" in line and "whl/cu126" in line


# ---------------------------------------------------------------------- the plan, printed and recorded


def test_the_recipe_command_prints_the_plan_with_reasons() -> None:
    done = run_module("nanogpt_lib.recipes", "gpu", "--device", "cpu", "--no_measure")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == ["Device", "Precision", "Compilation", "Micro-batch"]
    assert "x 1024 tokens" in lines[3] and "16,384 tokens per step" in lines[3]
    assert lines[4].startswith("Recipe: gpu (params/gpu-124m.yaml)")


def test_auto_micro_batch_runs_keeps_tokens_per_step_and_is_recorded(small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    auto = ("--batch_size", "auto", "--tokens_per_step", "8192", "--seq_len", "32", "--steps", "2")
    assert run_cli(train_main, [*tiny_args(small_corpus, out), *auto]) == 0
    config = json.loads((out / "run_config.json").read_text())
    assert config["train_config"]["batch_size"] == "auto"  # the options as given
    assert (config["plan"]["batch_size"], config["plan"]["grad_accum"]) == (64, 4)  # 64 x 32 = 2,048 tokens
    assert config["tokens_per_step"] == 8192
    assert json.loads((out / "summary.json").read_text())["tokens_seen"] == 2 * 8192  # grad_accum 4, not the given 2
    more = [*tiny_args(small_corpus, out), *auto[:-2], "--steps", "3", "--resume"]
    assert run_cli(train_main, more) == 0
    config = json.loads((out / "run_config.json").read_text())
    assert config["resumes"][0]["changed"] == {"steps": [2, 3]}  # auto is the same option at the resume
    assert config["plan"]["batch_size"] == 64
    assert json.loads((out / "summary.json").read_text())["tokens_seen"] == 3 * 8192
    # the full-corpus loss of the run's checkpoint takes the run's micro-batch, not "auto"
    assert run_cli(evaluate.main, ["--checkpoint", str(out / "checkpoints" / "last.pt"), "--device", "cpu"]) == 0


# ---------------------------------------------------------------------- compilation that fails at the first step


class CompileFails(torch.nn.Module):
    """What torch.compile returns where it cannot work: the first call raises (as Triton missing does)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self._orig_mod = module

    def forward(self, *args, **kwargs):
        raise RuntimeError("backend='inductor' raised:\nRuntimeError: Cannot find a working triton installation.")


def _losses(out: Path) -> list[str]:
    with open(out / "logs" / "train_metrics.csv", newline="") as fh:
        return [row["loss"] for row in csv.DictReader(fh)]


def test_a_compilation_that_fails_goes_on_in_eager_mode_losing_nothing(small_corpus, tmp_path, monkeypatch) -> None:
    eager = tmp_path / "eager"
    same = ("--dropout", "0.1", "--sampling", "epoch")  # the random state and the data position must be put back
    assert run_cli(train_main, [*tiny_args(small_corpus, eager), *same]) == 0
    monkeypatch.setattr(session.torch, "compile", CompileFails)
    fell_back = tmp_path / "fell_back"
    assert run_cli(train_main, [*tiny_args(small_corpus, fell_back), *same, "--compile"]) == 0
    assert _losses(fell_back) == _losses(eager)  # the same steps, digit for digit
    log = (fell_back / "logs" / "train.log").read_text()
    assert log.count("torch.compile failed at the first step") == 1
    assert "Cannot find a working triton installation" in log
    summaries = [json.loads((run / "summary.json").read_text()) for run in (eager, fell_back)]
    assert summaries[0]["tokens_seen"] == summaries[1]["tokens_seen"]


def test_out_of_memory_at_the_first_compiled_step_is_not_taken_for_a_compilation_failure(
    small_corpus, tmp_path, monkeypatch
) -> None:
    class OutOfMemory(CompileFails):
        def forward(self, *args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(session.torch, "compile", OutOfMemory)
    out = tmp_path / "run"
    assert run_cli(train_main, [*tiny_args(small_corpus, out), "--compile"]) == EXIT_USER_ERROR
    log = (out / "logs" / "train.log").read_text()
    assert "torch.compile failed" not in log


def test_expectation_uses_the_plans_micro_batch(monkeypatch) -> None:
    cfg = TrainConfig.from_dict(recipes.load_options(recipes.ROOT / "params" / "gpu-124m.yaml"))
    cfg.device = "cpu"
    seen = {}

    def fake_speed(cfg, plan, steps=2, untimed=2):
        seen["batch"] = plan.micro_batch.value
        return 1000.0, "here"

    monkeypatch.setattr(recipes, "measure_speed", fake_speed)
    assert "tokens take about" in recipes.expectation(cfg)
    assert seen["batch"] == (2, 8)


# ---------------------------------------------------------------------- a smaller or older card, on a big one


def _emulate_card_script():
    spec = importlib.util.spec_from_file_location("emulate_card", ROOT / "scripts" / "emulate_card.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_card_emulation_caps_memory_and_reports_the_older_capability(monkeypatch) -> None:
    script, seen = _emulate_card_script(), {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    props = type("Props", (), {"total_memory": 80 * GIB})()
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f: seen.setdefault("fraction", f))
    monkeypatch.setattr(plan, "probe", lambda dev: CARDS["H100 80 GB"][0])
    monkeypatch.setattr(device, "probe", lambda dev: CARDS["H100 80 GB"][0])

    def fake_train(argv):
        seen["argv"], seen["machine"] = argv, plan.probe(CUDA)
        return 0

    monkeypatch.setattr(script.train, "main", fake_train)
    assert script.main(["--memory_gib", "16", "--capability", "7.5", "--", "--steps", "200"]) == 0
    assert seen["fraction"] == 0.2 and seen["argv"] == ["--steps", "200"]
    machine = seen["machine"]
    assert machine.capability == (7, 5) and amp_decision("auto", machine).value == "fp16"


def test_the_card_emulation_needs_a_cuda_gpu() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/emulate_card.py", "--memory_gib", "8", "--", "--model", "tiny"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (
        done.returncode == EXIT_USER_ERROR
        and done.stderr.strip() == "error: emulating a card needs a CUDA GPU to run on"
    )
