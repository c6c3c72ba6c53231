"""What a run records about itself: run_config.json (the options, model, device, software, each resume and what it
changed) and summary.json (how the run ended, its losses, tokens and times), each built by one function from values:
the options, the session (session.py), the loop state (loop_state.py) and what the loop measured. The run directory
(rundir.py) writes them; the report reads them back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tiktoken
import torch

from . import stop_rules
from .config import TrainConfig
from .device import device_name
from .download import sha256_of
from .loop_state import LoopState
from .optim import describe

if TYPE_CHECKING:
    from .session import Session


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


def summary_record(
    cfg: TrainConfig,
    session: Session,
    state: LoopState,
    status: str,
    stop: stop_rules.Stop | None,
    corpus: float | None,
    signal: str | None = None,
    background_s: float = 0.0,
    resumes: int = 0,
) -> dict[str, Any]:
    """summary.json: how the run ended (and by which stop rule, with its value; ``signal``, what interrupted it), its
    losses, tokens and times (every session summed; ``background_s``, this session's writing of checkpoints), its
    ``resumes`` and its hardware."""
    timers, batches, device = state.timers, session.batches, session.device
    return {
        "status": status,
        "signal": signal,
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
        "tokens_seen": batches.tokens_seen,
        "epochs": round(batches.epochs, 4),
        "tokens_per_step": session.tokens_per_step,
        "processes": session.group.world_size,
        "wall_time_s": round(timers.elapsed(), 3),
        "train_time_s": round(timers["train_s"], 3),
        "warmup_time_s": round(timers["warmup_s"], 3),
        "checkpoint_time_s": round(timers["checkpoint_s"], 3),
        # this session's writing only: a session's last write cannot be counted in the last.pt it writes
        "checkpoint_background_s": round(background_s, 3),
        "sample_time_s": round(timers["sample_s"], 3),
        "eval_time_s": round(timers["eval_s"], 3),
        "lost_time_s": round(timers["lost_s"], 3),
        "resumes": resumes,
        "tok_per_s": round(timers["train_tokens"] / timers["train_s"], 1) if timers["train_s"] else None,
        "model": cfg.model,
        "n_params": session.raw_model.num_params(),
        "device": device_name(device),
        "amp": session.amp,
        # the most GPU memory held by tensors in this session (what a smaller card must hold), CUDA only
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        if device.type == "cuda"
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


def run_config_record(
    asked: TrainConfig, session: Session, previous: dict[str, Any], command: str, resumes: list[dict[str, Any]]
) -> dict[str, Any]:
    """run_config.json: the options as given (``asked``), the model, device and software of the session, the first
    session's command and start (from ``previous``, the run's run_config.json), and every resume."""
    model, plan = session.raw_model, session.plan
    return {
        "command": previous.get("command", command),
        "train_config": asked.to_dict(),
        "model_config": dataclasses.asdict(model.config),
        "n_params": model.num_params(),
        "tokens_in_corpus": int(len(session.tokens)),
        # the text by name and hash: what others may read of it without the path of this machine
        "input": {"name": Path(session.cfg.input_file).name, "sha256": _sha256(session.cfg.input_file)},
        "tokens_per_step": session.tokens_per_step,
        "processes": session.group.world_size,  # torchrun --nproc_per_node x nodes; batch_size is per process
        "device": str(session.device),
        "device_name": device_name(session.device),
        "amp": session.amp,
        "amp_reason": plan.amp.reason if plan else None,
        "plan": plan.record() if plan else None,
        "backends": session.backends,
        "optimizer": describe(session.optimizers),
        "versions": _versions(session.device),
        "git_commit": _git_commit(),
        "started_at": previous.get("started_at", now()),
        "resumes": resumes,
    }


def _sha256(path: str | os.PathLike) -> str | None:
    try:
        return sha256_of(Path(path).read_bytes())
    except OSError:  # read once already to train on it; gone since
        return None


def sessions(
    resumed: bool,
    state: LoopState,
    dropped: list[dict[str, Any]],
    previous: dict[str, Any],
    cfg: TrainConfig,
    command: str,
) -> tuple[list[dict[str, Any]], str | None]:
    """run_config.json's ``resumes`` (from ``previous``, the run's run_config.json) with this session's entry added
    when it ``resumed`` the run, and the line that names the options this resume changed, if it changed any."""
    resumes = previous.get("resumes", [])
    if not resumed:
        return resumes, None
    entry = resume_entry(state, dropped, previous, cfg, command)
    resumes.append(entry)
    changed = entry.get("changed")
    if not changed:
        return resumes, None
    what = ", ".join(f"{name} {before!r} -> {now!r}" for name, (before, now) in changed.items())
    return resumes, f"Options changed at this resume (recorded in run_config.json): {what}"


def resume_entry(
    state: LoopState, dropped: list[dict[str, Any]], previous: dict[str, Any], cfg: TrainConfig, command: str
) -> dict[str, Any]:
    """The entry of run_config.json's ``resumes`` for this session; it also counts the time lost.

    ``dropped`` are the metrics rows logged after the checkpoint's step (a killed run logged them, and they are
    redone): the time they took, at least up to their last row, still counts in the wall time.
    """
    lost = {}
    if dropped:
        lost_s = max(0.0, float(dropped[-1].get("elapsed_s") or 0.0) - state.timers["elapsed_s"])
        state.timers.add("elapsed_s", lost_s)
        state.timers.add("lost_s", lost_s)
        lost = {"steps_redone": int(dropped[-1]["step"]) - state.step, "seconds_lost": round(lost_s, 3)}
    changed = changed_options(previous.get("train_config", {}), cfg.to_dict())
    return {"step": state.step, "time": now(), "command": command, **lost, **({"changed": changed} if changed else {})}
