"""Checkpoints: written atomically, read with ``weights_only=True``.

``last.pt`` holds everything needed to resume exactly (model, optimizer, scaler, step, RNG and data
state, configs); ``best.pt`` holds the weights and the model config, enough for inference. Configs are
stored as plain dicts, so loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write
from .errors import UserError
from .model import GPTConfig

FORMAT_VERSION = 1
KIND_RESUME = "resume"  # last.pt
KIND_WEIGHTS = "weights"  # best.pt


def save(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    payload = {"format_version": FORMAT_VERSION, **payload}
    try:
        atomic_write(path, lambda fh: torch.save(payload, fh))
    except RuntimeError as err:  # torch's zip writer reports a failed write (disk full) as a RuntimeError
        detail = str(err).strip().splitlines()[0][:120] if str(err).strip() else "no detail"
        free_mb = shutil.disk_usage(Path(path).parent).free / 1e6
        raise OSError(
            errno.EIO, f"the write failed; is the disk full? ({free_mb:,.0f} MB free; torch: {detail})", str(path)
        ) from None


def weights_record(model: torch.nn.Module, step: int, loss: float, reason: str) -> dict[str, Any]:
    """What best.pt holds: the weights and the model config, with the step and loss they were saved at, and why."""
    return {
        "kind": KIND_WEIGHTS,
        "model": clean_state_dict(model.state_dict()),
        "model_config": dataclasses.asdict(model.config),
        "step": step,
        "loss": loss,
        "reason": reason,
    }


def resume_record(
    model: torch.nn.Module,
    train_config: dict[str, Any],
    optimizers: list[torch.optim.Optimizer],
    scaler: torch.amp.GradScaler,
    data: dict[str, Any],
    rng: dict[str, Any],
    loop: dict[str, Any],
) -> dict[str, Any]:
    """What last.pt holds: everything an exact resume needs (live tensors: the background writer copies them).

    ``optimizer`` is AdamW's state; with ``--optimizer muon`` Muon's is ``muon`` beside it.
    """
    return {
        "kind": KIND_RESUME,
        "model": clean_state_dict(model.state_dict()),
        "model_config": dataclasses.asdict(model.config),
        "train_config": train_config,
        "optimizer": optimizers[0].state_dict(),  # AdamW
        **({"muon": optimizers[1].state_dict()} if len(optimizers) > 1 else {}),
        "scaler": scaler.state_dict(),
        "data": data,
        "rng": rng,
        "loop": loop,
    }


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``_orig_mod.`` prefix that ``torch.compile`` wrappers add to parameter names."""
    return {k.removeprefix("_orig_mod."): v for k, v in state_dict.items()}


def load(path: str | os.PathLike, kind: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint written by :func:`save`; every failure is one clear UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, random bytes: all land here
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint {path} cannot be read (truncated, corrupt or not ours): {reason}") from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise UserError(f"checkpoint {path} was not written by nanogpt_lib")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise UserError(
            f"checkpoint {path} has format version {ckpt['format_version']}; "
            f"this nanogpt_lib reads version {FORMAT_VERSION}"
        )
    if kind == KIND_RESUME and ckpt.get("kind") != KIND_RESUME:
        raise UserError(f"checkpoint {path} holds weights only and cannot resume training; resume from last.pt")
    for key in ("model", "model_config"):
        if key not in ckpt:
            raise UserError(f"checkpoint {path} is incomplete: it has no {key!r} entry")
    return ckpt


def model_config_of(ckpt: dict[str, Any], path: str | os.PathLike) -> GPTConfig:
    try:
        return GPTConfig(**ckpt["model_config"])
    except TypeError as err:
        raise UserError(f"checkpoint {path} has a model config this version does not understand: {err}") from None


def load_weights(model: torch.nn.Module, ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """Copy a checkpoint's weights into ``model``, refusing any mismatch of names or shapes."""
    state = clean_state_dict(ckpt["model"])
    expected = model.state_dict()
    mismatched = [
        f"{name} {tuple(state[name].shape)} vs {tuple(t.shape)}"
        for name, t in expected.items()
        if name in state and state[name].shape != t.shape
    ]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if mismatched or missing or unexpected:
        detail = "; ".join(
            part
            for part in (
                f"shapes differ: {', '.join(mismatched[:3])}" if mismatched else "",
                f"missing: {', '.join(missing[:3])}" if missing else "",
                f"unexpected: {', '.join(unexpected[:3])}" if unexpected else "",
            )
            if part
        )
        raise UserError(f"checkpoint {path} does not fit this model ({detail})")
    model.load_state_dict(state)
