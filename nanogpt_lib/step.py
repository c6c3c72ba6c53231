"""The training step: gradients accumulated over micro-batches, clipped, and the optimizers' updates at the step's
learning rates. The Trainer (train.py), the sweep and the bench all take their steps through ``training_step``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from . import distributed
from .config import TrainConfig
from .device import autocast
from .optim import decay_start, set_learning_rates


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


def mean_over_group(loss: torch.Tensor, asked: bool, group: distributed.Group) -> tuple[torch.Tensor, bool]:
    """Under torchrun, in one collective: the step loss averaged over the processes, and whether any process of the
    group was asked to stop (Ctrl-C or SIGTERM) during the step, so that all of them stop after the same step."""
    both = group.sum(torch.stack([loss.detach().float(), torch.tensor(float(asked), device=loss.device)]))
    return both[0] / group.world_size, bool(both[1] > 0)
