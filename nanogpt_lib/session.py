"""A training session: what one session of a run trains with, built from its options (``assemble``), and what it does
each step (``Session.step``), what it gives to last.pt (``Session.payload``) and takes back (``Session.restore``). The
Trainer's loop (train.py) and the sweep's trials (sweep.py) both step through it.

It holds the device and process group, the precision, the corpus, the model and what runs its forward pass, the
optimizers, the batches, and the run directory.

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
from .optim import Schedule, decay_start, make_optimizers, set_learning_rates
from .plan import Plan, make_plan
from .rundir import QuietRunDir, RunDir
from .step import accumulate_gradients, clip_gradients
from .tokenizer import encode_file, get_tokenizer


@dataclasses.dataclass
class Session:
    """One session of a run: what it trains with and its step; ``Trainer.session`` once ``run()`` has started."""

    cfg: TrainConfig  # the options with the micro-batch and accumulation of the plan
    device: torch.device
    group: distributed.Group  # a group of one unless torchrun started several processes
    plan: Plan | None  # what this machine made of the options (precision, compilation, micro-batch), and why
    amp: str  # the plan's precision
    backends: dict[str, Any]  # the backend settings made for the device (recorded in run_config.json)
    tokens: np.ndarray  # the corpus as token ids
    raw_model: GPT
    model: torch.nn.Module  # raw_model, or its DDP and/or compiled wrapper, which runs the forward pass
    no_sync: Callable[[], contextlib.AbstractContextManager]  # DDP's no_sync, or a context that does nothing
    run_dir: RunDir  # a QuietRunDir, which writes nothing, on processes other than rank 0
    say: Callable[[str], None]  # a line for the run's log
    # from the above, fresh (last.pt puts their state back: ``restore``)
    tokens_per_step: int = dataclasses.field(init=False)  # by all processes together
    optimizers: list[torch.optim.Optimizer] = dataclasses.field(init=False)  # AdamW, then Muon with --optimizer muon
    scaler: torch.amp.GradScaler = dataclasses.field(init=False)  # scales fp16 losses; does nothing otherwise
    batches: Batches = dataclasses.field(init=False)
    schedule: Schedule = dataclasses.field(init=False)  # the learning-rate schedule of ``cfg``, read every step

    def __post_init__(self) -> None:
        cfg, group = self.cfg, self.group
        self.tokens_per_step = cfg.step_tokens * group.world_size
        self.optimizers = make_optimizers(self.raw_model, cfg.optimization)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.batches = make_batches(self.tokens, cfg, self.device, group)
        self.schedule = cfg.schedule

    def step(self, number: int) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """Optimizer step ``number`` (1-based) with the session's options: its learning rates, the gradients of
        ``grad_accum`` micro-batches (``step.accumulate_gradients``), clipping, the updates. Returns the step's mean
        loss and gradient norm as device tensors (no host-device sync here) and the (AdamW) learning rate used.
        ``model`` runs the forward pass (it may be the compiled or DDP wrapper of ``raw_model``)."""
        cfg, optimizers, scaler, device = self.cfg, self.optimizers, self.scaler, self.device
        lr = set_learning_rates(optimizers, number, self.schedule)
        model, amp, no_sync = self.model, self.amp, self.no_sync
        loss = accumulate_gradients(model, self.batches.next, device, amp, scaler, cfg.grad_accum, no_sync)
        grad_norm = None
        if cfg.grad_clip > 0:
            for optimizer in optimizers:
                scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
            grad_norm = clip_gradients(self.raw_model, cfg.grad_clip, device)
        for optimizer in optimizers:
            scaler.step(optimizer)  # skips the update when fp16 gradients overflowed
        scaler.update()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm, lr

    def first_step(self, number: int) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """The first ``step`` of a session, where a compiled model compiles. When compilation fails (no working
        Triton or C++ compiler, an unsupported card), the model goes back to eager mode and the same step is taken
        again from the same batches and random state, so the run loses nothing and trains as an eager run would."""
        if self.plan is None or not self.plan.compile.value:
            return self.step(number)
        data, rng = self.batches.state_dict(), resume.rng_state(self.device, distributed.Group())
        try:
            return self.step(number)
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
        return self.step(number)

    def payload(self, rng: dict[str, Any], loop: dict[str, Any]) -> dict[str, Any]:
        """What last.pt holds (checkpoint.resume_record), with ``rng`` from ``resume.rng_state`` and the loop state."""
        return checkpoint.resume_record(
            self.raw_model, self.cfg.to_dict(), self.optimizers, self.scaler, self.batches.state_dict(), rng, loop
        )

    def restore(self, ckpt: dict[str, Any], path: Path) -> LoopState:
        """Put the optimizers, scaler, data position and random generators back as last.pt holds them (the weights are
        in the model already); the loop state."""
        optimizers, group = self.optimizers, self.group
        try:
            if ("muon" in ckpt) != (len(optimizers) > 1):
                raise UserError(
                    f"{path} was trained with --optimizer {'muon' if 'muon' in ckpt else 'adamw'}; "
                    f"resume with it (each optimizer's state is in the checkpoint)"
                )
            for optimizer, key in zip(optimizers, ("optimizer", "muon")[: len(optimizers)], strict=True):
                optimizer.load_state_dict(ckpt[key])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.batches.load_state_dict(ckpt["data"])
            state = LoopState.from_dict(ckpt["loop"], self.cfg.log_every)
            rng = ckpt["rng"]["ranks"][group.rank] if group.enabled else ckpt["rng"]
            torch.set_rng_state(rng["torch"])
            if self.device.type == "cuda" and rng.get("cuda") is not None:
                torch.cuda.set_rng_state(rng["cuda"], self.device)
            return state
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            raise UserError(f"{path} is incomplete or from another version: {err}") from None

    @classmethod
    def of_model(
        cls,
        cfg: TrainConfig,
        raw_model: GPT,
        model: torch.nn.Module,
        tokens: np.ndarray,
        device: torch.device,
        amp: str,
    ) -> Session:
        """A session of one process around a model built elsewhere (a sweep's trial: one model, re-initialised per
        trial, maybe compiled): fresh optimizers and batches from the options, nothing written to disk."""
        return cls(
            cfg=cfg, device=device, group=distributed.Group(), plan=None, amp=amp, backends={}, tokens=tokens,
            raw_model=raw_model, model=model, no_sync=contextlib.nullcontext, run_dir=QuietRunDir(cfg.out_dir),
            say=print,
        )  # fmt: skip


def make_batches(tokens: np.ndarray, cfg: TrainConfig, device: torch.device, group: distributed.Group) -> Batches:
    """The batches of a session: each process its share of every step's windows, in the order the options give
    (with ``--window_order measured_in_decay``, at phase 0 from the tokens seen when the wsd decay begins)."""
    measured_from = None
    if cfg.window_order == "measured_in_decay":
        measured_from = decay_start(cfg.schedule) * cfg.step_tokens * group.world_size
    return Batches(tokens, cfg.windows, device, group.rank, group.world_size, measured_from)


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


def assemble(cfg: TrainConfig, say: Callable[[str], None] = print) -> tuple[Session, LoopState | None]:
    """The session of the run ``cfg`` describes (options already validated; the session holds them with the plan's
    micro-batch), and the loop state last.pt holds when the run goes on from it (None for a fresh start: the caller's
    fresh state stands). ``say`` writes a line to the run's log."""
    device, group = join_devices(cfg.device)
    with group.closed_on_error():
        return _assemble(cfg, device, group, say)


def _assemble(
    cfg: TrainConfig, device: torch.device, group: distributed.Group, say: Callable[[str], None]
) -> tuple[Session, LoopState | None]:
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
    model, no_sync = wrap_model(raw_model, group, device, plan.compile.value)
    session = Session(cfg, device, group, plan, amp, backends, tokens, raw_model, model, no_sync, run_dir, say)
    if ckpt is None:
        return session, None
    return session, session.restore(ckpt, run_dir.last)
