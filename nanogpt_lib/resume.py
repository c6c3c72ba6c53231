"""What a session takes from ``last.pt`` and gives back to it: the checkpoint to start from (or the refusal to
overwrite a run), the training state put back exactly, the random number generators saved, and the entry of
run_config.json that records the resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import checkpoint, distributed
from .config import TrainConfig
from .data import Batches
from .errors import UserError
from .loop_state import LoopState
from .model import model_config
from .records import changed_options, now
from .rundir import RunDir

if TYPE_CHECKING:
    from .parts import Parts


def check_resume_model(ckpt: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume a checkpoint whose model has another shape than ``--model`` (dropout may differ)."""
    saved = checkpoint.model_config_of(ckpt, path)
    wanted = model_config(cfg.model, cfg.dropout)
    if dataclasses.replace(saved, dropout=0.0) != dataclasses.replace(wanted, dropout=0.0):
        raise UserError(
            f"{path} holds a model of another shape ({saved}) than --model {cfg.model} ({wanted}); "
            f"pass the --model it was trained with, or another --out_dir"
        )


def checkpoint_to_resume(cfg: TrainConfig, run_dir: RunDir) -> dict[str, Any] | None:
    """last.pt when the run goes on from it (``--resume``), None for a fresh start; a run directory that already
    holds a run is refused unless ``--resume`` or ``--overwrite`` says what to do with it."""
    if run_dir.last.exists() and cfg.resume:
        ckpt = checkpoint.load(run_dir.last, kind=checkpoint.KIND_RESUME)
        check_resume_model(ckpt, cfg, run_dir.last)
        return ckpt
    if run_dir.last.exists() and not cfg.overwrite:
        raise UserError(
            f"{run_dir.root} already holds a run ({run_dir.last}); pass --resume to continue it, --overwrite to "
            f"replace it, or choose another --out_dir"
        )
    return None


def restore(
    ckpt: dict[str, Any],
    path: Path,
    optimizers: list[torch.optim.Optimizer],
    scaler: torch.amp.GradScaler,
    batches: Batches,
    group: distributed.Group,
    device: torch.device,
    log_every: int,
) -> LoopState:
    """Put the optimizers, scaler, data position and random generators back as last.pt holds them; the loop state."""
    try:
        if ("muon" in ckpt) != (len(optimizers) > 1):
            raise UserError(
                f"{path} was trained with --optimizer {'muon' if 'muon' in ckpt else 'adamw'}; "
                f"resume with it (each optimizer's state is in the checkpoint)"
            )
        for optimizer, key in zip(optimizers, ("optimizer", "muon")[: len(optimizers)], strict=True):
            optimizer.load_state_dict(ckpt[key])
        scaler.load_state_dict(ckpt["scaler"])
        batches.load_state_dict(ckpt["data"])
        state = LoopState.from_dict(ckpt["loop"], log_every)
        rng = ckpt["rng"]["ranks"][group.rank] if group.enabled else ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], device)
        return state
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise UserError(f"{path} is incomplete or from another version: {err}") from None


def rng_state(device: torch.device, group: distributed.Group) -> dict[str, Any]:
    """The random generators of this process (under torchrun: of every process, gathered) for last.pt."""
    rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    return {**rng, "ranks": group.gather(rng)} if group.enabled else rng


def last_record(parts: Parts, cfg: TrainConfig, rng: dict[str, Any], loop: dict[str, Any]) -> dict[str, Any]:
    """What last.pt holds (checkpoint.resume_record) from a session's parts, with ``rng`` from ``rng_state`` and the
    loop state ``loop``."""
    return checkpoint.resume_record(
        parts.raw_model, cfg.to_dict(), parts.optimizers, parts.scaler, parts.batches.state_dict(), rng, loop
    )


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
