"""What one session of a run trains with, built from its options (``assemble``): the device and process group, the
precision, the corpus, the model and what runs its forward pass, the optimizers, the batches, and the run directory.

The order matters and lives here: the process group first (under torchrun each process takes the GPU of its local
rank), the checkpoint to go on from before the run directory is prepared (``--overwrite`` clears it), the model's
weights before the optimizers that hold them, the optimizers and batches before last.pt puts their state back.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint, distributed, resume
from .config import TrainConfig
from .data import Batches
from .device import configure_backends, pick_device
from .errors import UserError
from .loop_state import LoopState
from .model import GPT, model_config
from .optim import make_optimizers
from .plan import Plan, make_plan
from .rundir import QuietRunDir, RunDir
from .step import measured_from_tokens, training_step
from .tokenizer import encode_file, get_tokenizer


@dataclasses.dataclass
class Parts:
    """The parts of one session; ``Trainer.parts`` once ``run()`` has started."""

    cfg: TrainConfig  # the options with the micro-batch and accumulation of the plan
    device: torch.device
    group: distributed.Group  # a group of one unless torchrun started several processes
    plan: Plan  # what this machine made of the options (precision, compilation, micro-batch), and why
    amp: str  # the plan's precision
    backends: dict[str, Any]  # the backend settings made for the device (recorded in run_config.json)
    tokens: np.ndarray  # the corpus as token ids
    tokens_per_step: int  # by all processes together
    raw_model: GPT
    model: torch.nn.Module  # raw_model, or its DDP and/or compiled wrapper, which runs the forward pass
    no_sync: Callable[[], contextlib.AbstractContextManager]  # DDP's no_sync, or a context that does nothing
    optimizers: list[torch.optim.Optimizer]  # AdamW, then Muon with --optimizer muon
    scaler: torch.amp.GradScaler  # scales fp16 losses; does nothing otherwise
    batches: Batches
    run_dir: RunDir  # a QuietRunDir, which writes nothing, on processes other than rank 0
    say: Callable[[str], None]  # a line for the run's log

    def train_step(self, cfg: TrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """Optimizer step ``step`` (1-based) with these parts: ``step.training_step``."""
        return training_step(
            self.model, self.raw_model, self.optimizers, self.scaler, self.batches.next, cfg, step, self.device,
            self.amp, self.no_sync,
        )  # fmt: skip

    def first_step(self, cfg: TrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """The first ``train_step`` of a session, where a compiled model compiles. When compilation fails (no working
        Triton or C++ compiler, an unsupported card), the model goes back to eager mode and the same step is taken
        again from the same batches and random state, so the run loses nothing and trains as an eager run would."""
        if not self.plan.compile.value:
            return self.train_step(cfg, step)
        data, rng = self.batches.state_dict(), resume.rng_state(self.device, distributed.Group())
        try:
            return self.train_step(cfg, step)
        except Exception as err:  # whatever compilation raised; a fault of the step itself recurs in eager mode
            if isinstance(err, torch.OutOfMemoryError):
                raise
            reason = (str(err).strip().splitlines() or [type(err).__name__])[-1][:300]
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.batches.load_state_dict(data)
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.model = self.model._orig_mod  # the module torch.compile wrapped (the model, or its DDP wrapper)
        self.say(f"torch.compile failed at the first step, so the run goes on in eager mode from that step: {reason}")
        return self.train_step(cfg, step)


def join_devices(device_name_or_auto: str) -> tuple[torch.device, distributed.Group]:
    """The device (``--device``) and the process group (of one, unless torchrun started several): under torchrun
    each process takes the GPU of its local rank."""
    device = pick_device(device_name_or_auto)
    group = distributed.join(device.type)
    if device.type == "cuda" and group.enabled:
        device = torch.device("cuda", group.local_rank)
    return device, group


def load_corpus(cfg: TrainConfig) -> np.ndarray:
    """The token ids of ``--input_file``; the tokenizer is loaded first, as sampling needs it too: a missing one fails
    now, not at the first sample after hours of training."""
    get_tokenizer()
    tokens = encode_file(cfg.input_file)
    if len(tokens) < cfg.seq_len + 1:
        raise UserError(
            f"{cfg.input_file} has {len(tokens)} tokens, fewer than --seq_len + 1 = {cfg.seq_len + 1}; "
            f"use a longer file or a smaller --seq_len"
        )
    return tokens


def build_model(
    cfg: TrainConfig, device: torch.device, group: distributed.Group, ckpt: dict[str, Any] | None, path: Path
) -> GPT:
    """The model, initialised from ``--seed`` (the same weights in every process) or with the weights of ``ckpt``."""
    torch.manual_seed(cfg.seed)
    model = GPT(model_config(cfg.model, cfg.dropout))
    if ckpt is not None:
        checkpoint.load_weights(model, ckpt, path)
    model.to(device)
    if group.rank > 0:
        torch.manual_seed(cfg.seed + group.rank)  # each process its own dropout
    return model


def wrap_model(
    model: GPT, group: distributed.Group, device: torch.device, compile_model: bool
) -> tuple[torch.nn.Module, Callable[[], contextlib.AbstractContextManager]]:
    """What runs the forward pass (the model, or its DDP and/or compiled wrapper), and DDP's ``no_sync``."""
    wrapped, no_sync = model, contextlib.nullcontext
    if group.enabled:
        wrapped = DistributedDataParallel(model, device_ids=[group.local_rank] if device.type == "cuda" else None)
        no_sync = wrapped.no_sync
    return (torch.compile(wrapped) if compile_model else wrapped), no_sync


def assemble(cfg: TrainConfig, say: Callable[[str], None] = print) -> tuple[Parts, LoopState | None]:
    """The parts of a session of the run ``cfg`` describes (options already validated; the parts hold them with the
    plan's micro-batch), and the loop state last.pt holds when the run goes on from it (None for a fresh start: the
    caller's fresh state stands). ``say`` writes a line to the run's log."""
    device, group = join_devices(cfg.device)
    with group.closed_on_error():
        return _assemble(cfg, device, group, say)


def _assemble(
    cfg: TrainConfig, device: torch.device, group: distributed.Group, say: Callable[[str], None]
) -> tuple[Parts, LoopState | None]:
    tokens = load_corpus(cfg)
    ckpt = resume.checkpoint_to_resume(cfg, RunDir(cfg.out_dir))
    started_with = RunDir(cfg.out_dir).read_run_config().get("plan", {}).get("batch_size") if ckpt else None
    plan = make_plan(cfg, device, group.world_size, started_with)
    cfg, amp = plan.apply(cfg), plan.amp.value
    # rank 0 writes the run directory for the group; the other processes' writes do nothing
    run_dir = RunDir(cfg.out_dir) if group.is_main else QuietRunDir(cfg.out_dir)
    run_dir.prepare(replace=cfg.overwrite)
    group.barrier()
    backends = configure_backends(device)
    raw_model = build_model(cfg, device, group, ckpt, run_dir.last)
    optimizers = make_optimizers(raw_model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    tokens_per_step = cfg.step_tokens * group.world_size
    batches = Batches(
        tokens, cfg.batch_size, cfg.seq_len, device, cfg.seed, cfg.sampling, group.rank, group.world_size,
        aligned_after_passes=cfg.aligned_after_passes, window_order=cfg.window_order,
        measured_from_tokens=measured_from_tokens(cfg, tokens_per_step),
    )  # fmt: skip
    model, no_sync = wrap_model(raw_model, group, device, plan.compile.value)
    parts = Parts(
        cfg=cfg,
        device=device,
        group=group,
        plan=plan,
        amp=amp,
        backends=backends,
        tokens=tokens,
        tokens_per_step=tokens_per_step,
        raw_model=raw_model,
        model=model,
        no_sync=no_sync,
        optimizers=optimizers,
        scaler=scaler,
        batches=batches,
        run_dir=run_dir,
        say=say,
    )
    if ckpt is None:
        return parts, None
    state = resume.restore(ckpt, run_dir.last, optimizers, scaler, batches, group, device, cfg.log_every)
    return parts, state
