"""What a session decides about ``last.pt``: the checkpoint to start from (or the refusal to overwrite a run), the
random number generators to save. Putting the training state back and taking it out is the session's
(``session.Session.restore`` and ``payload``); the entry of run_config.json that records a resume is records.py's."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from . import checkpoint, distributed
from .config import TrainConfig
from .errors import UserError
from .model import model_config
from .rundir import RunDir


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


def rng_state(device: torch.device, group: distributed.Group) -> dict[str, Any]:
    """The random generators of this process (under torchrun: of every process, gathered) for last.pt."""
    rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    return {**rng, "ranks": group.gather(rng)} if group.enabled else rng
