"""The training loop (``Trainer``) and the ``python -m nanogpt_lib.train`` command.

The loop writes the run directory (see "The run directory" in the README) and reports progress through
callbacks, so the CLI can print lines and a notebook can draw a live plot without the loop knowing who is watching::

    trainer = Trainer(TrainConfig(model="tiny", steps=100))
    trainer.add_callback("on_log", lambda row: print(row["step"], row["loss"]))
    summary = trainer.run()

Events: ``on_start(info)``, ``on_message(line)`` for every train.log line, ``on_log(row)`` for every
metrics row, ``on_sample(step, texts)``, ``on_end(summary)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint, distributed, runlog, stop_rules
from .checkpoint_writer import CheckpointWriter
from .config import TrainConfig, model_config, parse_train_args
from .data import Batches
from .device import amp_decision, autocast, configure_backends, device_name, pick_device
from .download import sha256_of
from .errors import UserError, run_cli
from .evaluate import corpus_loss
from .interrupts import StopRequests
from .loop_state import LoopState
from .model import GPT
from .optim import decay_start, describe, make_optimizers, set_learning_rates
from .rundir import RunDir
from .sample import generate_text
from .tokenizer import encode_file, get_tokenizer

EVENTS = ("on_start", "on_message", "on_log", "on_sample", "on_end")


def accumulate_gradients(
    model: torch.nn.Module,
    micro_batches: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp: str,
    scaler: torch.amp.GradScaler,
    grad_accum: int,
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """Forward and backward over ``grad_accum`` micro-batches; returns their mean loss (a device tensor).

    Each micro-batch's loss is divided by ``grad_accum`` before backward, so the summed gradients equal
    those of one batch ``grad_accum`` times larger. No host-device sync happens here. Under DDP, ``no_sync``
    (the wrapper's) keeps the processes from averaging gradients before the last micro-batch.
    """
    loss_sum = torch.zeros((), device=device)
    for i in range(grad_accum):
        x, y = micro_batches()
        with no_sync() if i < grad_accum - 1 else contextlib.nullcontext():
            with autocast(device, amp):
                _, loss = model(x, y)
            loss_sum += loss.detach().float()
            scaler.scale(loss / grad_accum).backward()
    return loss_sum / grad_accum


def clip_gradients(model: torch.nn.Module, max_norm: float, device: torch.device) -> torch.Tensor:
    """Scale the gradients so that their global norm is at most ``max_norm`` (as clip_grad_norm_); return the norm.

    clip_grad_norm_ multiplies every gradient by min(1, max_norm / (norm + 1e-6)) even when that is exactly 1. On a
    CPU the comparison costs nothing (there is no device to wait for), so that pass over 124M gradients is skipped
    when it would change nothing; on a GPU the check would make the host wait for the device every step.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if device.type != "cpu" or norm + 1e-6 > max_norm:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def training_step(
    model: torch.nn.Module,
    raw_model: torch.nn.Module,
    optimizers: list[torch.optim.Optimizer],
    scaler: torch.amp.GradScaler,
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    step: int,
    device: torch.device,
    amp: str,
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """One optimizer step (1-based ``step``): its learning rates, accumulated gradients, clipping, the updates.

    ``model`` runs the forward pass (it may be the compiled or DDP wrapper of ``raw_model``); ``optimizers`` share
    its parameters between them (``optim.make_optimizers``). Returns the step's mean loss and gradient norm as device
    tensors (no host-device sync here) and the (AdamW) learning rate used.
    """
    lr = set_learning_rates(optimizers, step, cfg)
    loss = accumulate_gradients(model, next_batch, device, amp, scaler, cfg.grad_accum, no_sync)
    grad_norm = None
    if cfg.grad_clip > 0:
        for optimizer in optimizers:
            scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
        grad_norm = clip_gradients(raw_model, cfg.grad_clip, device)
    for optimizer in optimizers:
        scaler.step(optimizer)  # skips the update when fp16 gradients overflowed
    scaler.update()
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    return loss, grad_norm, lr


def measured_from_tokens(cfg: TrainConfig, tokens_per_step: int) -> int | None:
    """With ``--window_order measured_in_decay``: the tokens seen when the wsd decay begins (else None)."""
    return decay_start(cfg) * tokens_per_step if cfg.window_order == "measured_in_decay" else None


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _versions(device: torch.device) -> dict[str, Any]:
    import tiktoken

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "tiktoken": tiktoken.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def check_resume_model(ckpt: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume a checkpoint whose model has another shape than ``--model`` (dropout may differ)."""
    saved = checkpoint.model_config_of(ckpt, path)
    wanted = model_config(cfg.model, cfg.dropout)
    if dataclasses.replace(saved, dropout=0.0) != dataclasses.replace(wanted, dropout=0.0):
        raise UserError(
            f"{path} holds a model of another shape ({saved}) than --model {cfg.model} ({wanted}); "
            f"pass the --model it was trained with, or another --out_dir"
        )


def out_of_memory_advice(cfg: TrainConfig, step: int) -> str:
    """One line for a GPU out of memory: half the batch, twice the accumulation (the same tokens per step)."""
    if cfg.batch_size > 1:
        fix = (
            f"--batch_size {cfg.batch_size // 2} --grad_accum {cfg.grad_accum * 2} "
            f"({(cfg.batch_size // 2) * cfg.seq_len * cfg.grad_accum * 2:,} tokens per step"
            f"{', the same' if cfg.batch_size % 2 == 0 else ''})"
        )
    else:
        fix = "a smaller --seq_len (batch_size is already 1)"
    return (
        f"out of GPU memory after step {step} with --batch_size {cfg.batch_size} x --seq_len {cfg.seq_len}; "
        f"try {fix}, then --resume; last.pt is intact"
    )


def summary_record(trainer: Trainer, status: str, stop: stop_rules.Stop | None, corpus: float | None) -> dict[str, Any]:
    """summary.json: how the run ended (and by which stop rule, with its value), its losses, tokens and times (every
    session summed), and its hardware."""
    cfg, state, timers = trainer.cfg, trainer.state, trainer.state.timers
    return {
        "status": status,
        "signal": (trainer.stop_requests.name or "a signal to another process") if status == "interrupted" else None,
        "stopped_by": stop.rule if stop else None,
        "stop": stop.record() if stop else None,
        "target_loss": cfg.target_loss,
        "steps": state.step,
        "steps_requested": cfg.steps,
        "target_step": state.target_step,
        "target_step_loss": state.target_step_loss,
        "final_step_loss": state.recent_losses[-1] if state.recent_losses else None,
        "best_step_loss": state.best_step_loss if math.isfinite(state.best_step_loss) else None,
        "best_step": state.best_step or None,
        "full_corpus_loss": corpus,
        "full_corpus_loss_step": state.step if corpus is not None else None,
        "tokens_seen": trainer.batches.tokens_seen,
        "epochs": round(trainer.batches.epochs, 4),
        "tokens_per_step": trainer.tokens_per_step,
        "processes": trainer.group.world_size,
        "wall_time_s": round(trainer.elapsed(), 3),
        "train_time_s": round(timers["train_s"], 3),
        "warmup_time_s": round(timers["warmup_s"], 3),
        "checkpoint_time_s": round(timers["checkpoint_s"], 3),
        "checkpoint_background_s": round(trainer.writer.write_seconds, 3),
        "sample_time_s": round(timers["sample_s"], 3),
        "eval_time_s": round(timers["eval_s"], 3),
        "lost_time_s": round(timers["lost_s"], 3),
        "resumes": len(trainer.resumes),
        "tok_per_s": round(timers["train_tokens"] / timers["train_s"], 1) if timers["train_s"] else None,
        "model": cfg.model,
        "n_params": trainer.raw_model.num_params(),
        "device": device_name(trainer.device),
        "amp": trainer.amp,
        # the most GPU memory held by tensors in this session (what a smaller card must hold), CUDA only
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(trainer.device) / 2**30, 3)
        if trainer.device.type == "cuda"
        else None,
        "finished_at": _now(),
    }


RESUME_FLAGS = ("resume", "overwrite")  # how a session was started, not what it trains
PATH_OPTIONS = ("out_dir", "input_file")


def changed_options(before: dict[str, Any], now: dict[str, Any]) -> dict[str, list[Any]]:
    """The training options that a resume changed, as {name: [before, now]}.

    An option that the run's run_config.json does not name yet (a run started by an older version) counts as its
    default; paths count as the files they name (``out/x`` and ``./out/x`` are the same run).
    """
    if not before:
        return {}
    defaults = TrainConfig().to_dict()

    def same(name: str, a: Any, b: Any) -> bool:
        if name in PATH_OPTIONS and isinstance(a, str) and isinstance(b, str):
            return Path(a).resolve() == Path(b).resolve()
        return a == b

    changed = {}
    for name, value in now.items():
        old = before.get(name, defaults.get(name))
        if name not in RESUME_FLAGS and not same(name, old, value):
            changed[name] = [old, value]
    return changed


def run_config_record(trainer: Trainer, previous: dict[str, Any]) -> dict[str, Any]:
    """run_config.json: the options, model, device and software of the run; the first session's command and start."""
    return {
        "command": previous.get("command", trainer.command),
        "train_config": trainer.cfg.to_dict(),
        "model_config": dataclasses.asdict(trainer.raw_model.config),
        "n_params": trainer.raw_model.num_params(),
        "tokens_in_corpus": int(len(trainer.tokens)),
        # the text by name and hash: what others may read of it without the path of this machine
        "input": {"name": Path(trainer.cfg.input_file).name, "sha256": _sha256(trainer.cfg.input_file)},
        "tokens_per_step": trainer.tokens_per_step,
        "processes": trainer.group.world_size,  # torchrun --nproc_per_node x nodes; batch_size is per process
        "device": str(trainer.device),
        "device_name": device_name(trainer.device),
        "amp": trainer.amp,
        "amp_reason": trainer.amp_reason,
        "backends": trainer.backends,
        "optimizer": describe(trainer.optimizers),
        "versions": _versions(trainer.device),
        "git_commit": _git_commit(),
        "started_at": previous.get("started_at", _now()),
        "resumes": trainer.resumes,
    }


def _sha256(path: str | os.PathLike) -> str | None:
    try:
        return sha256_of(Path(path).read_bytes())
    except OSError:  # read once already to train on it; gone since
        return None


def _lost_peer(err: RuntimeError) -> bool:
    """Whether a collective failed because another process of the group is gone (not a bug of this one)."""
    text = str(err)
    return isinstance(err, torch.distributed.DistBackendError) or any(
        clue in text for clue in ("Connection closed", "Connection reset", "Broken pipe", "peer")
    )


class _Discard:
    """The log and metrics of a process other than rank 0, which writes them for the group."""

    dropped: list = []

    def write(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass


class Trainer:
    """Trains a GPT on one text file according to a TrainConfig, writing a run directory (``rundir.RunDir``)."""

    def __init__(self, cfg: TrainConfig, command: str | None = None):
        self.cfg = cfg
        self.command = command or "nanogpt_lib.train.Trainer (from Python)"
        self.callbacks: dict[str, list[Callable]] = {event: [] for event in EVENTS}
        self.run_dir = RunDir(cfg.out_dir)
        self._start_afresh()  # again in _setup(), once the options are checked
        self.resumes: list[dict[str, Any]] = []  # one entry per session that continued this run
        self.resumed_from_checkpoint = self.resume_missing = False
        self.saved_step = 0  # the step last.pt holds (or is being written with)
        self.group = distributed.Group()  # a group of one until _setup() joins torchrun's
        self.tokens_per_step = cfg.tokens_per_step  # by all processes together
        self.no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
        # Set up by _setup() from the options: device, data, model, optimizer, run files.
        self.device: torch.device
        self.amp: str
        self.amp_reason: str
        self.backends: dict[str, Any]
        self.tokens: np.ndarray
        self.raw_model: GPT
        self.model: torch.nn.Module  # raw_model, or its DDP and/or compiled wrapper, which runs the forward pass
        self.optimizers: list[torch.optim.Optimizer]  # AdamW, then Muon with --optimizer muon
        self.scaler: torch.amp.GradScaler
        self.batches: Batches
        self.writer: CheckpointWriter
        self.log: runlog.TextLog
        self.metrics: runlog.MetricsCSV

    def add_callback(self, event: str, fn: Callable) -> None:
        if event not in self.callbacks:
            raise ValueError(f"unknown event {event!r}; events are {', '.join(EVENTS)}")
        self.callbacks[event].append(fn)

    def _emit(self, event: str, *args: Any) -> None:
        if not self.group.is_main:  # one process speaks for the group
            return
        for fn in self.callbacks[event]:
            fn(*args)

    def _say(self, line: str) -> None:
        self.log.write(line)
        self._emit("on_message", line)

    def elapsed(self) -> float:
        """Wall time of the run so far, every session counted."""
        return self.state.timers.elapsed()

    # ------------------------------------------------------------------ set-up

    def _start_afresh(self) -> None:
        """The loop's state before a run: step 0 (until a checkpoint says otherwise), no stop asked."""
        self.state = LoopState.fresh(max(0, self.cfg.log_every))  # before validate(), log_every may be anything
        self.interval = [0, 0.0]  # tokens and training seconds since the last log row
        self.stop_requests = StopRequests()
        self.stop_asked = False  # under torchrun: whether any process was asked to stop during this step

    def _setup(self) -> None:
        cfg, run_dir = self.cfg, self.run_dir
        cfg.validate()
        self._start_afresh()  # a second run() of this Trainer starts from the checkpoint again
        self.device = pick_device(cfg.device)
        self.group = group = distributed.join(self.device.type)
        if self.device.type == "cuda" and group.enabled:
            self.device = torch.device("cuda", group.local_rank)
        self.tokens_per_step = cfg.tokens_per_step * group.world_size
        self.amp, self.amp_reason = amp_decision(cfg.amp, self.device)
        get_tokenizer()  # sampling needs it too: fail now, not at the first sample after hours of training
        self.tokens = encode_file(cfg.input_file)
        if len(self.tokens) < cfg.seq_len + 1:
            raise UserError(
                f"{cfg.input_file} has {len(self.tokens)} tokens, fewer than --seq_len + 1 = {cfg.seq_len + 1}; "
                f"use a longer file or a smaller --seq_len"
            )
        ckpt = None
        if run_dir.last.exists() and cfg.resume:
            ckpt = checkpoint.load(run_dir.last, kind=checkpoint.KIND_RESUME)
            check_resume_model(ckpt, cfg, run_dir.last)
        elif run_dir.last.exists() and not cfg.overwrite:
            raise UserError(
                f"{run_dir.root} already holds a run ({run_dir.last}); pass --resume to continue it, --overwrite to "
                f"replace it, or choose another --out_dir"
            )
        if group.is_main:
            run_dir.prepare(replace=cfg.overwrite)
        group.barrier()
        self.backends = configure_backends(self.device)
        self.writer = CheckpointWriter()
        torch.manual_seed(cfg.seed)
        self.raw_model = GPT(model_config(cfg.model, cfg.dropout))
        if ckpt is not None:
            checkpoint.load_weights(self.raw_model, ckpt, run_dir.last)
        self.raw_model.to(self.device)
        if group.rank > 0:
            torch.manual_seed(cfg.seed + group.rank)  # the same weights everywhere, each process its own dropout
        self.optimizers = make_optimizers(self.raw_model, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.batches = Batches(
            self.tokens,
            cfg.batch_size,
            cfg.seq_len,
            self.device,
            cfg.seed,
            cfg.sampling,
            group.rank,
            group.world_size,
            aligned_after_passes=cfg.aligned_after_passes,
            window_order=cfg.window_order,
            measured_from_tokens=measured_from_tokens(cfg, self.tokens_per_step),
        )
        wrapped = self.raw_model
        if group.enabled:
            cuda = self.device.type == "cuda"
            wrapped = DistributedDataParallel(self.raw_model, device_ids=[group.local_rank] if cuda else None)
            self.no_sync = wrapped.no_sync
        self.model = torch.compile(wrapped) if cfg.compile else wrapped
        if ckpt is not None:
            self._restore(ckpt)
        self.resumed_from_checkpoint = ckpt is not None
        self.resume_missing = cfg.resume and ckpt is None
        self._open_run_files()

    def _restore(self, ckpt: dict[str, Any]) -> None:
        try:
            if ("muon" in ckpt) != (len(self.optimizers) > 1):
                raise UserError(
                    f"{self.run_dir.last} was trained with --optimizer {'muon' if 'muon' in ckpt else 'adamw'}; "
                    f"resume with it (each optimizer's state is in the checkpoint)"
                )
            for optimizer, key in zip(self.optimizers, ("optimizer", "muon")[: len(self.optimizers)], strict=True):
                optimizer.load_state_dict(ckpt[key])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.batches.load_state_dict(ckpt["data"])
            self.state = LoopState.from_dict(ckpt["loop"], self.cfg.log_every)
            rng = ckpt["rng"]["ranks"][self.group.rank] if self.group.enabled else ckpt["rng"]
            torch.set_rng_state(rng["torch"])
            if self.device.type == "cuda" and rng.get("cuda") is not None:
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            raise UserError(f"{self.run_dir.last} is incomplete or from another version: {err}") from None

    def _open_run_files(self) -> None:
        """Open the log and the metrics; record this session in run_config.json.

        Metrics rows past the checkpoint's step (or, on a fresh start, rows of a run that never saved) are dropped: a
        killed run logged steps after its last checkpoint, which are redone, and the time they took (at least up to
        their last metrics row) still counts in the wall time.
        """
        state = self.state
        self.saved_step = state.step
        if not self.group.is_main:  # rank 0 writes the run directory
            self.log = self.metrics = _Discard()
            return
        self.log = self.run_dir.open_log()
        self.metrics = self.run_dir.open_metrics(keep_until_step=state.step)
        previous = self.run_dir.read_run_config() if self.resumed_from_checkpoint else {}
        self.resumes = previous.get("resumes", [])
        if self.resumed_from_checkpoint:
            lost = {}
            if self.metrics.dropped:
                last_row = self.metrics.dropped[-1]
                lost_s = max(0.0, float(last_row.get("elapsed_s") or 0.0) - state.timers["elapsed_s"])
                state.timers.add("elapsed_s", lost_s)
                state.timers.add("lost_s", lost_s)
                lost = {"steps_redone": int(last_row["step"]) - state.step, "seconds_lost": round(lost_s, 3)}
            changed = changed_options(previous.get("train_config", {}), self.cfg.to_dict())
            self.resumes.append(
                {
                    "step": state.step,
                    "time": _now(),
                    "command": self.command,
                    **lost,
                    **({"changed": changed} if changed else {}),
                }
            )
            if changed:
                what = ", ".join(f"{name} {before!r} -> {now!r}" for name, (before, now) in changed.items())
                self._say(f"Options changed at this resume (recorded in run_config.json): {what}")
        self.run_dir.write_run_config(run_config_record(self, previous))

    # ------------------------------------------------------------------ checkpoints, samples, evaluation

    def _save(self, best: tuple[float, str] | None = None) -> None:
        """Save ``best.pt`` (when ``best`` gives a loss and its reason) and ``last.pt``, written in the background.

        Only the snapshot of the state (and waiting for a write still in flight) holds up training; that time
        is what ``checkpoint_s`` counts. Under torchrun every process takes part (each one's RNG state goes into
        last.pt) and rank 0 writes.
        """
        with self.state.timers.phase("checkpoint_s"):
            state, files = self.state, []
            if best is not None:
                state.best_saved_loss = best[0]  # before the payload of last.pt, which carries it
                files.append((self.run_dir.best, checkpoint.weights_record(self.raw_model, state.step, *best)))
                self._say(f"New best loss {best[0]:.6f} ({best[1]}) at step {state.step}: writing best.pt")
            cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
            rng = {"torch": torch.get_rng_state(), "cuda": cuda_rng}
            if self.group.enabled:
                rng = {**rng, "ranks": self.group.gather(rng)}
            self.saved_step = state.step
            if self.group.is_main:
                last = checkpoint.resume_record(
                    self.raw_model,
                    self.cfg.to_dict(),
                    self.optimizers,
                    self.scaler,
                    self.batches.state_dict(),
                    rng,
                    state.to_dict(self.elapsed()),
                )
                self.writer.submit([*files, (self.run_dir.last, last)])  # the writer snapshots the live tensors

    def _checkpoint(self) -> None:
        """Save last.pt; save best.pt when the recent mean loss beats the one best.pt was saved with.

        best.pt is judged at checkpoint time, on the mean step loss of the last log_every steps, instead
        of on every new minimum of a single noisy step: a handful of writes per run instead of hundreds.
        """
        recent = self.state.recent_mean
        window = len(self.state.recent_losses)
        self._save((recent, f"mean of the last {window} steps") if recent < self.state.best_saved_loss else None)

    def _wait_for_writes(self) -> None:
        """Block until the checkpoint write in flight is on disk (counted as checkpoint time: training waits)."""
        with self.state.timers.phase("checkpoint_s"):
            self.writer.wait()

    def _sample(self) -> None:
        if not self.group.is_main:
            return
        with self.state.timers.phase("sample_s"):
            cfg, step = self.cfg, self.state.step
            texts = []
            for prompt in cfg.prompts:
                outputs = generate_text(
                    self.raw_model,
                    prompt,
                    cfg.max_new_tokens,
                    cfg.temperature,
                    cfg.top_k,
                    seed=cfg.seed + step,
                    num_samples=cfg.num_prompts,
                    amp=self.amp,
                )
                self.run_dir.append_samples(step, prompt, outputs, cfg.temperature, cfg.top_k)
                texts += outputs
        self._emit("on_sample", step, texts)

    def _corpus_loss(self, why: str) -> float:
        cfg = self.cfg
        with self.state.timers.phase("eval_s") as lap:
            # the uncompiled model: a pass that runs once would otherwise pay for compiling its shapes
            windows = cfg.batch_size * cfg.grad_accum
            loss = corpus_loss(self.raw_model, self.tokens, cfg.seq_len, windows, self.device, self.amp, self.group)
        seconds = lap.seconds
        self.state.record_corpus_loss(loss)
        self._say(
            f"Full-corpus loss {loss:.6f} at step {self.state.step} ({len(self.tokens) - 1:,} tokens, {seconds:.1f}s); "
            f"evaluated because {why}"
        )
        return loss

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict[str, Any]:
        """Train until ``steps`` or the target; returns the summary (also written to summary.json)."""
        self._setup()
        try:
            with self.stop_requests:
                return self._loop()
        except torch.OutOfMemoryError:
            raise UserError(out_of_memory_advice(self.cfg, self.state.step)) from None
        except RuntimeError as err:  # under torchrun: another process died, its connection closed
            if not (self.group.enabled and _lost_peer(err)):
                raise
            raise UserError(
                f"process {self.group.rank} of {self.group.world_size}: the group broke off "
                f"({str(err).splitlines()[0][:200]}); last.pt (step {self.saved_step}) is intact: run the same "
                f"torchrun command with --resume"
            ) from None
        except OSError as err:
            raise UserError(
                f"could not write {err.filename or self.cfg.out_dir}: {err.strerror or err}; "
                f"the checkpoints already on disk are intact (free some space, then --resume)"
            ) from None
        finally:
            self.writer.close()  # a write in flight finishes before the process moves on
            self.log.close()
            self.metrics.close()
            self.group.close()

    def _loop(self) -> dict[str, Any]:
        """Step → record → maybe evaluate → the stop decision → maybe log → periodic save and sample → signals."""
        cfg, state = self.cfg, self.state
        state.timers.start_session()
        start_step = state.step
        self._announce()
        if state.step >= cfg.steps:
            return self._finish("completed", None, None)
        while True:
            step_loss, grad_norm, lr = self._step(first=state.step == start_step)
            state.record(step_loss, cfg.target_loss)
            why = stop_rules.corpus_pass_reason(cfg, state) if math.isfinite(step_loss) else None
            corpus = self._corpus_loss(why) if why else None
            stop = stop_rules.decide(cfg, state, stop_rules.Seen(step_loss, corpus, self.batches.tokens_seen))
            if stop is not None and stop.status == "diverged":
                self._diverge(stop)
            if state.step % cfg.log_every == 0 or stop or corpus is not None:
                self._log_row(step_loss, grad_norm, lr, corpus)
            if stop is not None:
                return self._end(stop, corpus)
            if cfg.save_every and state.step % cfg.save_every == 0:
                self._checkpoint()
            if cfg.sample_every and state.step % cfg.sample_every == 0:
                self._sample()
            if self._stop_requested():
                if self.saved_step != state.step:  # not twice when this step's checkpoint was just written
                    self._save()
                self._say(
                    f"Stopped by {self.stop_requests.name or 'a signal to another process'} after step {state.step}: "
                    f"saved last.pt; continue with --resume."
                )
                return self._finish("interrupted", None, None)

    def _announce(self) -> None:
        cfg, state = self.cfg, self.state
        if self.resume_missing:
            self._say(f"No checkpoint at {self.run_dir.last}: starting a fresh run.")
        if self.resumed_from_checkpoint:
            self._say(
                f"Resumed from {self.run_dir.last} at step {state.step} ({self.batches.tokens_seen:,} tokens seen)."
            )
        n_params = self.raw_model.num_params()
        world = self.group.world_size
        per_process = (
            f" ({cfg.batch_size} x {cfg.seq_len} x {cfg.grad_accum} per process x {world})" if world > 1 else ""
        )
        self._say(
            f"Model {cfg.model}: {n_params:,} parameters | device {device_name(self.device)} | "
            f"amp {self.amp} ({self.amp_reason}) | compile {cfg.compile} | {len(self.tokens):,} tokens in "
            f"{cfg.input_file} | {self.tokens_per_step:,} tokens/step{per_process}"
        )
        info = {
            "n_params": n_params,
            "device": device_name(self.device),
            "amp": self.amp,
            "start_step": state.step,
            "steps": cfg.steps,
            "tokens_in_corpus": len(self.tokens),
        }
        self._emit("on_start", info)
        if state.step >= cfg.steps:
            self._say(
                f"Already at step {state.step} of {cfg.steps}: nothing to train (pass a larger --steps to extend)."
            )

    def _stop_requested(self) -> bool:
        """Ctrl-C or SIGTERM: in one process, as soon as it comes; under torchrun, the group's decision of the step."""
        return self.stop_asked if self.group.enabled else self.stop_requests.signal is not None

    def _step(self, first: bool) -> tuple[float, torch.Tensor | None, float]:
        """One optimizer step, timed: the step loss (fp32, the one host-device sync per step), gradient norm, rate.

        The first step of a session counts as warm-up (allocation, compilation), apart from the training time.
        """
        cfg, state = self.cfg, self.state
        with state.timers.phase("warmup_s" if first else "train_s") as lap:
            model, optimizers, scaler, device = self.model, self.optimizers, self.scaler, self.device
            loss, grad_norm, lr = training_step(
                model,
                self.raw_model,
                optimizers,
                scaler,
                self.batches.next,
                cfg,
                state.step + 1,
                device,
                self.amp,
                self.no_sync,
            )
            state.step += 1
            if self.group.enabled:  # the mean over the processes, and whether any of them was asked to stop
                asked = torch.tensor(float(self.stop_requests.signal is not None), device=loss.device)
                both = self.group.sum(torch.stack([loss.detach().float(), asked]))
                loss, self.stop_asked = both[0] / self.group.world_size, bool(both[1] > 0)
            step_loss = loss.item()
            self.writer.raise_if_failed()  # a failed background write stops the run here, with its file named
        if not first:
            state.timers.add("train_tokens", self.tokens_per_step)
            self.interval[0] += self.tokens_per_step
            self.interval[1] += lap.seconds
        return step_loss, grad_norm, lr

    def _log_row(self, step_loss: float, grad_norm: torch.Tensor | None, lr: float, corpus: float | None) -> None:
        tokens, seconds = self.interval
        tok_per_s = tokens / seconds if seconds > 0 else float("nan")
        row = {
            "step": self.state.step,
            "loss": step_loss,
            "lr": lr,
            "grad_norm": grad_norm.item() if grad_norm is not None else None,
            "tokens_seen": self.batches.tokens_seen,
            "epoch": self.batches.epochs,
            "tok_per_s": tok_per_s,
            "elapsed_s": self.elapsed(),
            "corpus_loss": corpus,
        }
        self.metrics.write(row)
        self._say(
            f"step {row['step']}/{self.cfg.steps} | loss {step_loss:.6f} | lr {lr:.2e} | "
            f"tok/s {'n/a (warm-up)' if math.isnan(tok_per_s) else f'{tok_per_s:.1f}'} | "
            f"elapsed {row['elapsed_s']:.1f}s"
        )
        self._emit("on_log", row)
        self.interval = [0, 0.0]

    def _end(self, stop: stop_rules.Stop, corpus: float | None) -> dict[str, Any]:
        """The run ends here: at the target (best.pt with the weights that reached it, both losses measured) or
        after its last step."""
        self._say(f"{stop.message} ({self.batches.tokens_seen:,} tokens, {self.elapsed():.1f}s)")
        reached = stop.status == "target_reached"
        if reached:
            self._save(best=(stop.value, f"target reached by {stop.what}"))
        else:
            self._checkpoint()
        self._sample()  # while the checkpoints are written (the periodic sample of this step comes after the stop)
        if corpus is None and reached:
            corpus = self._corpus_loss("the run reached its target: the summary reports both losses")
        return self._finish(stop.status, stop, corpus)

    def _diverge(self, stop: stop_rules.Stop) -> None:
        """A loss that is not a number: the summary says so, last.pt stays as it was, the run stops with one line."""
        message = (
            f"{stop.message}. last.pt (step {self.saved_step}) is untouched; try --amp bf16 (or off) or a lower --lr, "
            f"then --resume"
        )
        self._say(f"Stopped: {message}")
        self._finish("diverged", stop, None)
        raise UserError(message)

    def _finish(self, status: str, stop: stop_rules.Stop | None, corpus: float | None) -> dict[str, Any]:
        self._wait_for_writes()  # the summary is written once the checkpoints it describes are on disk
        summary = summary_record(self, status, stop, corpus)
        if self.group.is_main:
            self.run_dir.write_summary(summary)
        elapsed, held = summary["wall_time_s"], self.state.timers["checkpoint_s"]
        self._say(
            f"Checkpoints: {held:.1f}s of training held up ({100 * held / elapsed if elapsed > 0 else 0.0:.1f}% of "
            f"{elapsed:.1f}s wall time); {self.writer.write_seconds:.1f}s of writing in the background"
        )
        if status in ("completed", "target_reached"):
            self._say("Training complete.")
        self._emit("on_end", summary)
        self.group.barrier()  # no process exits (torchrun would stop the others) before rank 0 has written
        return summary


# ---------------------------------------------------------------------- command line


def _console_callbacks(trainer: Trainer, cfg: TrainConfig) -> None:
    """Print every log line; on a terminal, also a tqdm progress bar (lines are written above it)."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, unit="step", dynamic_ncols=True, file=sys.stderr)

        def on_start(info: dict) -> None:
            bar.n = info["start_step"]
            bar.refresh()

        def on_log(row: dict) -> None:
            bar.update(row["step"] - bar.n)

        trainer.add_callback("on_start", on_start)
        trainer.add_callback("on_message", lambda line: bar.write(line))
        trainer.add_callback("on_log", on_log)
        trainer.add_callback("on_end", lambda summary: bar.close())
    else:
        trainer.add_callback("on_message", lambda line: print(line, flush=True))


def continue_command(argv: list[str], cfg: TrainConfig, group: distributed.Group) -> str:
    """The command that resumes an interrupted run: the same flags, --resume instead of any --overwrite.

    Flags that argparse took for --overwrite or --resume (abbreviated or negated too) are dropped; when a --config
    file may have set overwrite, --no-overwrite turns it off (flags win over the file).
    """

    def means(arg: str, *names: str) -> bool:  # argparse accepts any unambiguous prefix of a flag
        flag = arg.split("=", 1)[0]
        return len(flag) > 2 and flag.startswith("--") and any(name.startswith(flag) for name in names)

    kept = [a for a in argv if not means(a, "--overwrite", "--no-overwrite", "--resume", "--no-resume")]
    from_file = cfg.overwrite and any(means(a, "--config") for a in argv)
    launcher = ["python"]
    if group.enabled:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", group.world_size))
        # several machines: the same command, with the rendezvous flags it was started with instead of --standalone
        rendezvous = "--standalone" if per_node == group.world_size else "<your --nnodes/--rdzv flags>"
        launcher = ["torchrun", rendezvous, f"--nproc_per_node={per_node}"]
    return shlex.join(
        [*launcher, "-m", "nanogpt_lib.train", *kept, *(["--no-overwrite"] if from_file else []), "--resume"]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_train_args(
        argv,
        prog="python -m nanogpt_lib.train",
        description="Train a GPT-2 style model from scratch on a text file until the training loss reaches a target.",
    )
    trainer = Trainer(cfg, command=shlex.join(["python", "-m", "nanogpt_lib.train", *argv]))
    _console_callbacks(trainer, cfg)
    summary = trainer.run()
    group = trainer.group
    if summary["status"] == "interrupted":
        if group.is_main:
            print(f"Interrupted; continue with: {continue_command(argv, cfg, group)}", file=sys.stderr)
        return 128 + (trainer.stop_requests.signal or signal.SIGTERM)
    if summary["status"] == "target_reached" and group.is_main:
        print(f"Target reached at step {summary['steps']}; run directory: {cfg.out_dir}", file=sys.stderr)
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
