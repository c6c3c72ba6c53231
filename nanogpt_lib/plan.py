"""What a run will do on this machine, decided before step 1: the device, the precision, compilation, and the
micro-batch x accumulation, each with its reason, and what is wrong with the set-up (an NVIDIA GPU that this torch
cannot use, a precision the card only emulates).

The first lines of a run's log are these lines, and ``nanogpt plan`` (recipes.py) prints them for the proven
recipe of this machine. The decisions themselves live beside what they decide: precision and compilation in
device.py, the micro-batch in batchfit.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .batchfit import gpu_probe, micro_batch_decision
from .config import AUTO, TrainConfig
from .device import Decision, Machine, amp_decision, compile_decision, nvidia_gpu, probe, unused_gpu
from .model import GPT, model_config


@dataclasses.dataclass(frozen=True)
class Plan:
    machine: Machine
    amp: Decision  # "bf16", "fp16" or "off"
    compile: Decision  # True or False
    micro_batch: Decision  # (batch_size, grad_accum)
    warnings: tuple[str, ...] = ()  # said before anything else

    def apply(self, cfg: TrainConfig) -> TrainConfig:
        """The options with the micro-batch and accumulation this machine takes (the same tokens per step)."""
        return cfg.with_micro_batch(self.micro_batch.value[0])

    def lines(self, seq_len: int) -> list[str]:
        batch, accum = self.micro_batch.value
        memory = f", {self.machine.memory_bytes / 2**30:.1f} GiB" if self.machine.memory_bytes else ""
        return [
            *self.warnings,
            f"Device: {self.machine.card}{memory} ({self.machine.platform})",
            f"Precision: {'fp32' if self.amp.value == 'off' else self.amp.value} ({self.amp.reason})",
            f"Compilation: {'torch.compile' if self.compile.value else 'eager'} ({self.compile.reason})",
            f"Micro-batch: {batch} x {seq_len} tokens, {accum} per step ({self.micro_batch.reason})",
        ]

    def record(self) -> dict[str, Any]:
        """run_config.json's ``plan``: what this machine made of the options, and why."""
        batch, accum = self.micro_batch.value
        return {
            "amp": self.amp.value,
            "amp_reason": self.amp.reason,
            "compile": self.compile.value,
            "compile_reason": self.compile.reason,
            "batch_size": batch,
            "grad_accum": accum,
            "batch_reason": self.micro_batch.reason,
            "warnings": list(self.warnings),
        }


def make_plan(cfg: TrainConfig, device: torch.device, processes: int = 1, started_with: int | None = None) -> Plan:
    """The plan for options ``cfg`` (validated) on ``device``; ``started_with``: the micro-batch that a resumed run
    started with (run_config.json's plan). With ``--batch_size auto`` on a GPU this tries micro-batches on a
    throwaway model; the random state that training uses is left as it was."""
    machine = probe(device)
    amp = amp_decision(cfg.amp, machine)
    compiled = compile_decision(cfg.compile, machine)
    sequences = cfg.step_tokens // cfg.seq_len
    if device.type == "cuda" and cfg.batch_size == AUTO:
        with torch.random.fork_rng(devices=[torch.cuda.current_device() if device.index is None else device.index]):
            model = GPT(model_config(cfg.model, cfg.dropout)).to(device)
            fits = gpu_probe(model, cfg.seq_len, machine, amp.value, processes)
            micro_batch = micro_batch_decision(cfg.batch_size, sequences, cfg.seq_len, machine, fits, started_with)
            del model, fits
            torch.cuda.empty_cache()
    else:
        micro_batch = micro_batch_decision(cfg.batch_size, sequences, cfg.seq_len, machine)
    unused = unused_gpu(nvidia_gpu()) if device.type == "cpu" else None
    unused = unused and f"WARNING: training on the CPU, many times slower: {unused}"
    warnings = tuple(w for w in (unused, amp.warning, compiled.warning, micro_batch.warning) if w)
    return Plan(machine, amp, compiled, micro_batch, warnings)
