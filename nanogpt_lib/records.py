"""What a run records about itself: run_config.json (the options, model, device, software, each resume and what it
changed) and summary.json (how the run ended, its losses, tokens and times), built from the Trainer's state. The
run directory (rundir.py) writes them; the report reads them back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
import torch

from . import stop_rules
from .config import TrainConfig
from .device import device_name
from .download import sha256_of
from .optim import describe


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
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "tiktoken": tiktoken.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def summary_record(trainer, status: str, stop: stop_rules.Stop | None, corpus: float | None) -> dict[str, Any]:
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
        "tokens_seen": trainer.parts.batches.tokens_seen,
        "epochs": round(trainer.parts.batches.epochs, 4),
        "tokens_per_step": trainer.parts.tokens_per_step,
        "processes": trainer.parts.group.world_size,
        "wall_time_s": round(trainer.elapsed(), 3),
        "train_time_s": round(timers["train_s"], 3),
        "warmup_time_s": round(timers["warmup_s"], 3),
        "checkpoint_time_s": round(timers["checkpoint_s"], 3),
        # this session's writing only: a session's last write cannot be counted in the last.pt it writes
        "checkpoint_background_s": round(trainer.writer.write_seconds, 3),
        "sample_time_s": round(timers["sample_s"], 3),
        "eval_time_s": round(timers["eval_s"], 3),
        "lost_time_s": round(timers["lost_s"], 3),
        "resumes": len(trainer.resumes),
        "tok_per_s": round(timers["train_tokens"] / timers["train_s"], 1) if timers["train_s"] else None,
        "model": cfg.model,
        "n_params": trainer.parts.raw_model.num_params(),
        "device": device_name(trainer.parts.device),
        "amp": trainer.parts.amp,
        # the most GPU memory held by tensors in this session (what a smaller card must hold), CUDA only
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(trainer.parts.device) / 2**30, 3)
        if trainer.parts.device.type == "cuda"
        else None,
        "finished_at": now(),
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


def run_config_record(trainer, previous: dict[str, Any]) -> dict[str, Any]:
    """run_config.json: the options, model, device and software of the run; the first session's command and start."""
    return {
        "command": previous.get("command", trainer.command),
        "train_config": trainer.asked.to_dict(),
        "model_config": dataclasses.asdict(trainer.parts.raw_model.config),
        "n_params": trainer.parts.raw_model.num_params(),
        "tokens_in_corpus": int(len(trainer.parts.tokens)),
        # the text by name and hash: what others may read of it without the path of this machine
        "input": {"name": Path(trainer.cfg.input_file).name, "sha256": _sha256(trainer.cfg.input_file)},
        "tokens_per_step": trainer.parts.tokens_per_step,
        "processes": trainer.parts.group.world_size,  # torchrun --nproc_per_node x nodes; batch_size is per process
        "device": str(trainer.parts.device),
        "device_name": device_name(trainer.parts.device),
        "amp": trainer.parts.amp,
        "amp_reason": trainer.parts.plan.amp.reason,
        "plan": trainer.parts.plan.record(),
        "backends": trainer.parts.backends,
        "optimizer": describe(trainer.parts.optimizers),
        "versions": _versions(trainer.parts.device),
        "git_commit": _git_commit(),
        "started_at": previous.get("started_at", now()),
        "resumes": trainer.resumes,
    }


def _sha256(path: str | os.PathLike) -> str | None:
    try:
        return sha256_of(Path(path).read_bytes())
    except OSError:  # read once already to train on it; gone since
        return None
