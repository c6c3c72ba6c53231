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

import collections
import dataclasses
import datetime as dt
import math
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint, runlog
from .checkpoint_writer import CheckpointWriter
from .config import TrainConfig, model_config, parse_train_args
from .data import Batches
from .device import amp_decision, autocast, configure_backends, device_name, pick_device
from .errors import UserError, run_cli
from .evaluate import corpus_loss
from .interrupts import StopRequests
from .model import GPT
from .sample import generate_text
from .tokenizer import encode_file, get_tokenizer

EVENTS = ("on_start", "on_message", "on_log", "on_sample", "on_end")
RUN_FILES = ("logs", "samples", "checkpoints", "summary.json", "run_config.json")
RECHECK_WINDOWS = 10  # with --stop_on corpus: a full-corpus pass at least every 10 log windows at the target


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (1-based): linear warm-up, then constant or cosine decay.

    The cosine decays from ``lr`` to ``min_lr`` at ``decay_steps`` (or at ``steps``) and stays at ``min_lr`` after.
    """
    if step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    end = cfg.decay_steps or cfg.steps
    progress = (step - cfg.warmup_steps) / max(1, end - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices and embeddings only, fused where the device has it."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},  # biases and LayerNorm gains
    ]
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):  # no fused kernel for this device or dtype
        return torch.optim.AdamW(groups, **kwargs)


def accumulate_gradients(
    model: torch.nn.Module,
    micro_batches: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp: str,
    scaler: torch.amp.GradScaler,
    grad_accum: int,
) -> torch.Tensor:
    """Forward and backward over ``grad_accum`` micro-batches; returns their mean loss (a device tensor).

    Each micro-batch's loss is divided by ``grad_accum`` before backward, so the summed gradients equal
    those of one batch ``grad_accum`` times larger. No host-device sync happens here.
    """
    loss_sum = torch.zeros((), device=device)
    for _ in range(grad_accum):
        x, y = micro_batches()
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
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    step: int,
    device: torch.device,
    amp: str,
) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """One optimizer step (1-based ``step``): its learning rate, accumulated gradients, clipping, the update.

    ``model`` runs the forward pass (it may be the compiled wrapper of ``raw_model``). Returns the step's mean
    loss and gradient norm as device tensors (no host-device sync here) and the learning rate used.
    """
    lr = lr_at(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = accumulate_gradients(model, next_batch, device, amp, scaler, cfg.grad_accum)
    grad_norm = None
    if cfg.grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
        grad_norm = clip_gradients(raw_model, cfg.grad_clip, device)
    scaler.step(optimizer)  # skips the update when fp16 gradients overflowed
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss, grad_norm, lr


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


class Trainer:
    """Trains a GPT on one text file according to a TrainConfig, writing a run directory."""

    def __init__(self, cfg: TrainConfig, command: str | None = None):
        self.cfg = cfg
        self.command = command or "nanogpt_lib.train.Trainer (from Python)"
        self.callbacks: dict[str, list[Callable]] = {event: [] for event in EVENTS}

    def add_callback(self, event: str, fn: Callable) -> None:
        if event not in self.callbacks:
            raise ValueError(f"unknown event {event!r}; events are {', '.join(EVENTS)}")
        self.callbacks[event].append(fn)

    def _emit(self, event: str, *args: Any) -> None:
        for fn in self.callbacks[event]:
            fn(*args)

    def _say(self, line: str) -> None:
        self.log.write(line)
        self._emit("on_message", line)

    # ------------------------------------------------------------------ set-up

    def _prepare_out_dir(self) -> dict[str, Any] | None:
        """Create the run directory; return the resume checkpoint if there is one to continue."""
        cfg, out = self.cfg, Path(self.cfg.out_dir)
        last = out / "checkpoints" / "last.pt"
        ckpt = None
        if last.exists() and cfg.resume:
            ckpt = checkpoint.load(last, kind=checkpoint.KIND_RESUME)
            saved = checkpoint.model_config_of(ckpt, last)
            wanted = model_config(cfg.model, cfg.dropout)
            if dataclasses.replace(saved, dropout=0.0) != dataclasses.replace(wanted, dropout=0.0):
                raise UserError(
                    f"{last} holds a model of another shape ({saved}) than --model {cfg.model} ({wanted}); "
                    f"pass the --model it was trained with, or another --out_dir"
                )
        elif last.exists() and not cfg.overwrite:
            raise UserError(
                f"{out} already holds a run ({last}); pass --resume to continue it, --overwrite to replace it, "
                f"or choose another --out_dir"
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
            if cfg.overwrite and (last.exists() or (out / "run_config.json").exists()):
                for name in RUN_FILES:
                    target = out / name
                    if target.is_dir():
                        shutil.rmtree(target)
                    elif target.exists():
                        target.unlink()
            for sub in ("logs", "samples", "checkpoints"):
                (out / sub).mkdir(exist_ok=True)
            for stale in (out / "checkpoints").glob(".*.tmp"):  # what a write killed half-way left behind
                stale.unlink()
        except OSError as err:
            raise UserError(f"cannot create the run directory {out}: {err.strerror or err}") from None
        return ckpt

    def _setup(self) -> None:
        cfg = self.cfg
        cfg.validate()
        self.device = pick_device(cfg.device)
        self.amp, self.amp_reason = amp_decision(cfg.amp, self.device)
        get_tokenizer()  # sampling needs it too: fail now, not at the first sample after hours of training
        self.tokens = encode_file(cfg.input_file)
        if len(self.tokens) < cfg.seq_len + 1:
            raise UserError(
                f"{cfg.input_file} has {len(self.tokens)} tokens, fewer than --seq_len + 1 = {cfg.seq_len + 1}; "
                f"use a longer file or a smaller --seq_len"
            )
        resume_ckpt = self._prepare_out_dir()
        out = Path(cfg.out_dir)
        self.paths = {
            "last": out / "checkpoints" / "last.pt",
            "best": out / "checkpoints" / "best.pt",
            "log": out / "logs" / "train.log",
            "metrics": out / "logs" / "train_metrics.csv",
            "samples": out / "samples" / "samples.txt",
            "summary": out / "summary.json",
            "run_config": out / "run_config.json",
        }
        self.backends = configure_backends(self.device)
        self.writer = CheckpointWriter()
        torch.manual_seed(cfg.seed)
        self.model_config = model_config(cfg.model, cfg.dropout)
        self.raw_model = GPT(self.model_config)
        if resume_ckpt is not None:
            checkpoint.load_weights(self.raw_model, resume_ckpt, self.paths["last"])
        self.raw_model.to(self.device)
        self.optimizer = make_optimizer(self.raw_model, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.batches = Batches(self.tokens, cfg.batch_size, cfg.seq_len, self.device, cfg.seed, cfg.sampling)
        self.model = torch.compile(self.raw_model) if cfg.compile else self.raw_model

        # Loop state: everything that last.pt must carry for an exact resume.
        self.step = 0
        self.best_step_loss, self.best_step = math.inf, 0
        self.best_saved_loss = math.inf
        self.recent_losses: collections.deque[float] = collections.deque(maxlen=cfg.log_every)
        self.timers = dict.fromkeys(
            ("elapsed_s", "train_s", "train_tokens", "warmup_s", "checkpoint_s", "sample_s", "eval_s", "lost_s"), 0.0
        )
        self.target_step: int | None = None
        self.target_step_loss: float | None = None
        self.last_eval_step = 0
        self.corpus_offset = 0.0  # full-corpus loss minus the running mean step loss, at the last pass
        if resume_ckpt is not None:
            self._restore(resume_ckpt)

        self.log = runlog.TextLog(self.paths["log"])
        # Rows past the checkpoint's step (or, on a fresh start, rows of a run that never saved) are dropped.
        self.metrics = runlog.MetricsCSV(self.paths["metrics"], keep_until_step=self.step)
        lost = None
        if resume_ckpt is not None and self.metrics.dropped:
            # A killed run logged steps after its last checkpoint: they are redone, and the time they took
            # (at least up to their last metrics row) still counts in the wall time.
            last_row = self.metrics.dropped[-1]
            lost_s = max(0.0, float(last_row.get("elapsed_s") or 0.0) - self.timers["elapsed_s"])
            self.timers["elapsed_s"] += lost_s
            self.timers["lost_s"] += lost_s
            lost = {"steps_redone": int(last_row["step"]) - self.step, "seconds_lost": round(lost_s, 3)}
        self._saved_step = self.step
        self._write_run_config(resumed=resume_ckpt is not None, lost=lost)
        self.resumed = resume_ckpt is not None
        self.resume_missing = cfg.resume and resume_ckpt is None

    def _restore(self, ckpt: dict[str, Any]) -> None:
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.batches.load_state_dict(ckpt["data"])
            loop = ckpt["loop"]
            torch.set_rng_state(ckpt["rng"]["torch"])
            if self.device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            raise UserError(f"{self.paths['last']} is incomplete or from another version: {err}") from None
        self.step = int(loop["step"])
        self.best_step_loss, self.best_step = float(loop["best_step_loss"]), int(loop["best_step"])
        self.best_saved_loss = float(loop["best_saved_loss"])
        self.recent_losses.extend(loop["recent_losses"])
        self.target_step, self.target_step_loss = loop.get("target_step"), loop.get("target_step_loss")
        self.last_eval_step = int(loop.get("last_eval_step", 0))
        self.corpus_offset = float(loop.get("corpus_offset", 0.0))
        self.timers.update({k: float(v) for k, v in loop["timers"].items()})

    def _write_run_config(self, resumed: bool, lost: dict[str, Any] | None) -> None:
        path = self.paths["run_config"]
        previous = runlog.read_json(path) if resumed and path.exists() else {}
        resumes = previous.get("resumes", [])
        if resumed:
            resumes.append({"step": self.step, "time": _now(), "command": self.command, **(lost or {})})
        self.resumes = resumes
        runlog.write_json(
            path,
            {
                "command": previous.get("command", self.command),
                "train_config": self.cfg.to_dict(),
                "model_config": dataclasses.asdict(self.model_config),
                "n_params": self.raw_model.num_params(),
                "tokens_in_corpus": int(len(self.tokens)),
                "tokens_per_step": self.cfg.tokens_per_step,
                "device": str(self.device),
                "device_name": device_name(self.device),
                "amp": self.amp,
                "amp_reason": self.amp_reason,
                "backends": self.backends,
                "optimizer": f"AdamW (fused={self.optimizer.defaults.get('fused')})",
                "versions": _versions(self.device),
                "git_commit": _git_commit(),
                "started_at": previous.get("started_at", _now()),
                "resumes": resumes,
            },
        )

    # ------------------------------------------------------------------ checkpoints, samples, evaluation

    def _weights(self) -> dict[str, torch.Tensor]:
        return checkpoint.clean_state_dict(self.raw_model.state_dict())

    def _last_payload(self) -> dict[str, Any]:
        """Everything ``last.pt`` needs for an exact resume (live tensors: the writer snapshots them)."""
        return {
            "kind": checkpoint.KIND_RESUME,
            "model": self._weights(),
            "model_config": dataclasses.asdict(self.model_config),
            "train_config": self.cfg.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data": self.batches.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            },
            "loop": {
                "step": self.step,
                "best_step_loss": self.best_step_loss,
                "best_step": self.best_step,
                "best_saved_loss": self.best_saved_loss,
                "recent_losses": list(self.recent_losses),
                "target_step": self.target_step,
                "target_step_loss": self.target_step_loss,
                "last_eval_step": self.last_eval_step,
                "corpus_offset": self.corpus_offset,
                "timers": {**self.timers, "elapsed_s": self._elapsed()},
            },
        }

    def _save(self, best: tuple[float, str] | None = None, last: bool = True) -> None:
        """Save ``best.pt`` (when ``best`` gives a loss and its reason) and ``last.pt``, written in the background.

        Only the snapshot of the state (and waiting for a write still in flight) holds up training; that time
        is what ``checkpoint_s`` counts.
        """
        t0 = time.perf_counter()
        files = []
        if best is not None:
            loss, reason = best
            self.best_saved_loss = loss  # before the payload of last.pt, which carries it
            files.append(
                (
                    self.paths["best"],
                    {
                        "kind": checkpoint.KIND_WEIGHTS,
                        "model": self._weights(),
                        "model_config": dataclasses.asdict(self.model_config),
                        "step": self.step,
                        "loss": loss,
                        "reason": reason,
                    },
                )
            )
            self._say(f"New best loss {loss:.6f} ({reason}) at step {self.step}: writing best.pt")
        if last:
            files.append((self.paths["last"], self._last_payload()))
            self._saved_step = self.step
        self.writer.submit(files)
        self.timers["checkpoint_s"] += time.perf_counter() - t0

    def _checkpoint(self) -> None:
        """Save last.pt; save best.pt when the recent mean loss beats the one best.pt was saved with.

        best.pt is judged at checkpoint time, on the mean step loss of the last log_every steps, instead
        of on every new minimum of a single noisy step: a handful of writes per run instead of hundreds.
        """
        recent = sum(self.recent_losses) / max(1, len(self.recent_losses))
        best = (recent, f"mean of the last {len(self.recent_losses)} steps") if recent < self.best_saved_loss else None
        self._save(best)

    def _wait_for_writes(self) -> None:
        """Block until the checkpoint write in flight is on disk (counted as checkpoint time: training waits)."""
        t0 = time.perf_counter()
        self.writer.wait()
        self.timers["checkpoint_s"] += time.perf_counter() - t0

    def _sample(self) -> None:
        t0 = time.perf_counter()
        cfg = self.cfg
        texts = []
        for prompt in cfg.prompts:
            outputs = generate_text(
                self.raw_model, prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k,
                seed=cfg.seed + self.step, num_samples=cfg.num_prompts, amp=self.amp,
            )  # fmt: skip
            runlog.append_samples(self.paths["samples"], self.step, prompt, outputs, cfg.temperature, cfg.top_k)
            texts += outputs
        self.timers["sample_s"] += time.perf_counter() - t0
        self._emit("on_sample", self.step, texts)

    def _corpus_loss_is_near(self) -> str | None:
        """Why a full-corpus pass should run now (with --stop_on corpus), or None while the target is not near.

        The pass costs as much as many training steps, so it runs only when the running mean of the step losses
        (the last log_every steps), corrected by how far the previous pass fell from that mean, predicts a
        full-corpus loss at the target.
        """
        mean = sum(self.recent_losses) / len(self.recent_losses)
        predicted = mean + self.corpus_offset
        if predicted > self.cfg.target_loss:
            # an offset measured once must not hold the pass off for ever: once the step losses alone are at the
            # target, a pass runs at least every RECHECK_WINDOWS log windows
            since = self.step - self.last_eval_step
            if mean <= self.cfg.target_loss and since >= RECHECK_WINDOWS * self.cfg.log_every:
                return (
                    f"the mean step loss of the last {len(self.recent_losses)} steps, {mean:.6f}, is at the target "
                    f"and {since} steps have passed since the last pass"
                )
            return None
        return (
            f"the mean step loss of the last {len(self.recent_losses)} steps, {mean:.6f}"
            + (f", plus the last pass's offset {self.corpus_offset:+.6f}," if self.corpus_offset else "")
            + f" predicts {predicted:.6f} <= {self.cfg.target_loss}"
        )

    def _corpus_loss(self, why: str) -> float:
        t0 = time.perf_counter()
        loss = corpus_loss(  # the uncompiled model: a pass that runs once would otherwise pay for compiling its shapes
            self.raw_model,
            self.tokens,
            self.cfg.seq_len,
            self.cfg.batch_size * self.cfg.grad_accum,
            self.device,
            self.amp,
        )
        seconds = time.perf_counter() - t0
        self.timers["eval_s"] += seconds
        self.last_eval_step = self.step
        self.corpus_offset = loss - sum(self.recent_losses) / max(1, len(self.recent_losses))
        self._say(
            f"Full-corpus loss {loss:.6f} at step {self.step} ({len(self.tokens) - 1:,} tokens, {seconds:.1f}s); "
            f"evaluated because {why}"
        )
        return loss

    def _elapsed(self) -> float:
        return self.timers["elapsed_s"] + (time.perf_counter() - self.session_start)

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict[str, Any]:
        """Train until ``steps`` or the target; returns the summary (also written to summary.json)."""
        self._setup()
        try:
            with StopRequests() as self.stop_requests:
                return self._loop()
        except torch.OutOfMemoryError:
            raise UserError(self._out_of_memory_advice()) from None
        except OSError as err:
            raise UserError(
                f"could not write {err.filename or self.cfg.out_dir}: {err.strerror or err}; "
                f"the checkpoints already on disk are intact (free some space, then --resume)"
            ) from None
        finally:
            self.writer.close()  # a write in flight finishes before the process moves on
            self.log.close()
            self.metrics.close()

    def _out_of_memory_advice(self) -> str:
        cfg = self.cfg
        if cfg.batch_size > 1:
            fix = (
                f"--batch_size {cfg.batch_size // 2} --grad_accum {cfg.grad_accum * 2} "
                f"({(cfg.batch_size // 2) * cfg.seq_len * cfg.grad_accum * 2:,} tokens per step"
                f"{', the same' if cfg.batch_size % 2 == 0 else ''})"
            )
        else:
            fix = "a smaller --seq_len (batch_size is already 1)"
        return (
            f"out of GPU memory after step {self.step} with --batch_size {cfg.batch_size} x --seq_len {cfg.seq_len}; "
            f"try {fix}, then --resume; last.pt is intact"
        )

    def _loop(self) -> dict[str, Any]:
        cfg = self.cfg
        self.session_start = time.perf_counter()
        start_step = self.step
        n_params = self.raw_model.num_params()
        if self.resume_missing:
            self._say(f"No checkpoint at {self.paths['last']}: starting a fresh run.")
        if self.resumed:
            self._say(
                f"Resumed from {self.paths['last']} at step {self.step} ({self.batches.tokens_seen:,} tokens seen)."
            )
        self._say(
            f"Model {cfg.model}: {n_params:,} parameters | device {device_name(self.device)} | "
            f"amp {self.amp} ({self.amp_reason}) | "
            f"compile {cfg.compile} | {len(self.tokens):,} tokens in {cfg.input_file} | "
            f"{cfg.tokens_per_step:,} tokens/step"
        )
        self._emit(
            "on_start",
            {
                "n_params": n_params,
                "device": device_name(self.device),
                "amp": self.amp,
                "start_step": start_step,
                "steps": cfg.steps,
                "tokens_in_corpus": len(self.tokens),
            },
        )
        if self.step >= cfg.steps:
            self._say(
                f"Already at step {self.step} of {cfg.steps}: nothing to train (pass a larger --steps to extend)."
            )

        interval_tokens, interval_time = 0, 0.0
        stopped_by = corpus = None
        while self.step < cfg.steps:
            step = self.step + 1
            t0 = time.perf_counter()
            loss, grad_norm, lr = training_step(
                self.model, self.raw_model, self.optimizer, self.scaler, self.batches.next, cfg, step, self.device,
                self.amp,
            )  # fmt: skip
            self.step = step
            step_loss = loss.item()  # the one host-device sync per step: the early stop needs this value
            self.writer.raise_if_failed()  # a failed background write stops the run here, with its file named
            seconds = time.perf_counter() - t0
            if step == start_step + 1:
                self.timers["warmup_s"] += seconds  # first step of a session: allocation, compilation
            else:
                self.timers["train_s"] += seconds
                self.timers["train_tokens"] += cfg.tokens_per_step
                interval_tokens += cfg.tokens_per_step
                interval_time += seconds

            if not math.isfinite(step_loss):
                message = (
                    f"the loss became {step_loss} at step {step}: training diverged. last.pt (step "
                    f"{self._saved_step}) is untouched; try --amp bf16 (or off) or a lower --lr, then --resume"
                )
                self._say(f"Stopped: {message}")
                self._finish("diverged", None, None)
                raise UserError(message)
            self.recent_losses.append(step_loss)
            if step_loss < self.best_step_loss:
                self.best_step_loss, self.best_step = step_loss, step

            reached = step_loss <= cfg.target_loss
            if reached and self.target_step is None:
                self.target_step, self.target_step_loss = step, step_loss
            why = None
            if cfg.eval_every and step % cfg.eval_every == 0:
                why = f"every {cfg.eval_every} steps (--eval_every)"
            elif cfg.stop_on == "corpus" and step - self.last_eval_step >= min(cfg.log_every, step):
                why = self._corpus_loss_is_near()
            corpus = self._corpus_loss(why) if why else None
            if cfg.stop_on == "step" and reached:
                stopped_by = "step"
            elif cfg.stop_on == "corpus" and corpus is not None and corpus <= cfg.target_loss:
                stopped_by = "corpus"

            if step % cfg.log_every == 0 or stopped_by or corpus is not None or step == cfg.steps:
                tok_per_s = interval_tokens / interval_time if interval_time > 0 else float("nan")
                row = {
                    "step": step,
                    "loss": step_loss,
                    "lr": lr,
                    "grad_norm": grad_norm.item() if grad_norm is not None else None,
                    "tokens_seen": self.batches.tokens_seen,
                    "epoch": self.batches.epochs,
                    "tok_per_s": tok_per_s,
                    "elapsed_s": self._elapsed(),
                    "corpus_loss": corpus,
                }
                self.metrics.write(row)
                self._say(
                    f"step {step}/{cfg.steps} | loss {step_loss:.6f} | lr {lr:.2e} | "
                    f"tok/s {'n/a (warm-up)' if math.isnan(tok_per_s) else f'{tok_per_s:.1f}'} | "
                    f"elapsed {row['elapsed_s']:.1f}s"
                )
                self._emit("on_log", row)
                interval_tokens, interval_time = 0, 0.0

            if stopped_by:
                which = "step loss" if stopped_by == "step" else "full-corpus loss"
                value = step_loss if stopped_by == "step" else corpus
                self._say(
                    f"Target reached: {which} {value:.6f} <= {cfg.target_loss} at step {step} "
                    f"({self.batches.tokens_seen:,} tokens, {self._elapsed():.1f}s)"
                )
                self._save(best=(value, f"target reached by the {which}"))
                self._sample()  # while the checkpoints are written
                if corpus is None:
                    corpus = self._corpus_loss("the run reached its target: the summary reports both losses")
                return self._finish("target_reached", stopped_by, corpus)
            if cfg.save_every and step % cfg.save_every == 0:
                self._checkpoint()
            if cfg.sample_every and step % cfg.sample_every == 0:
                self._sample()
            if self.stop_requests.signal is not None:
                if self._saved_step != step:  # not twice when this step's checkpoint was just written
                    self._save()
                self._say(
                    f"Stopped by {self.stop_requests.name} after step {step}: saved last.pt; continue with --resume."
                )
                return self._finish("interrupted", None, None)

        if self.step > start_step:
            self._checkpoint()
            if not (cfg.sample_every and self.step % cfg.sample_every == 0):
                self._sample()  # while the checkpoints are written
        return self._finish("completed", None, corpus)

    def _finish(self, status: str, stopped_by: str | None, corpus: float | None) -> dict[str, Any]:
        cfg = self.cfg
        self._wait_for_writes()  # the summary is written once the checkpoints it describes are on disk
        elapsed = self._elapsed()
        summary = {
            "status": status,
            "signal": self.stop_requests.name if status == "interrupted" else None,
            "stopped_by": {"step": "step_loss", "corpus": "full_corpus_loss"}.get(stopped_by),
            "target_loss": cfg.target_loss,
            "steps": self.step,
            "steps_requested": cfg.steps,
            "target_step": self.target_step,
            "target_step_loss": self.target_step_loss,
            "final_step_loss": self.recent_losses[-1] if self.recent_losses else None,
            "best_step_loss": self.best_step_loss if math.isfinite(self.best_step_loss) else None,
            "best_step": self.best_step or None,
            "full_corpus_loss": corpus,
            "full_corpus_loss_step": self.step if corpus is not None else None,
            "tokens_seen": self.batches.tokens_seen,
            "epochs": round(self.batches.epochs, 4),
            "tokens_per_step": cfg.tokens_per_step,
            "wall_time_s": round(elapsed, 3),
            "train_time_s": round(self.timers["train_s"], 3),
            "warmup_time_s": round(self.timers["warmup_s"], 3),
            "checkpoint_time_s": round(self.timers["checkpoint_s"], 3),
            "checkpoint_background_s": round(self.writer.write_seconds, 3),
            "sample_time_s": round(self.timers["sample_s"], 3),
            "eval_time_s": round(self.timers["eval_s"], 3),
            "lost_time_s": round(self.timers["lost_s"], 3),
            "resumes": len(self.resumes),
            "tok_per_s": round(self.timers["train_tokens"] / self.timers["train_s"], 1)
            if self.timers["train_s"]
            else None,
            "model": cfg.model,
            "n_params": self.raw_model.num_params(),
            "device": device_name(self.device),
            "amp": self.amp,
            # the most GPU memory held by tensors in this session (what a smaller card must hold), CUDA only
            "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
            if self.device.type == "cuda"
            else None,
            "finished_at": _now(),
        }
        runlog.write_json(self.paths["summary"], summary)
        share = 100 * self.timers["checkpoint_s"] / elapsed if elapsed > 0 else 0.0
        self._say(
            f"Checkpoints: {self.timers['checkpoint_s']:.1f}s of training held up ({share:.1f}% of {elapsed:.1f}s wall "
            f"time); {self.writer.write_seconds:.1f}s of writing in the background"
        )
        if status in ("completed", "target_reached"):
            self._say("Training complete.")
        self._emit("on_end", summary)
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
    if summary["status"] == "interrupted":
        kept = [a for a in argv if a not in ("--overwrite", "--resume")]  # --overwrite again would start afresh
        again = shlex.join(["python", "-m", "nanogpt_lib.train", *kept, "--resume"])
        print(f"Interrupted; continue with: {again}", file=sys.stderr)
        return 128 + trainer.stop_requests.signal
    if summary["status"] == "target_reached":
        print(f"Target reached at step {summary['steps']}; run directory: {cfg.out_dir}", file=sys.stderr)
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
