"""The pieces of a training step that ``session.Session.step`` puts together: gradients accumulated over
micro-batches, clipped; the loss and stop requests shared by a group."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from . import distributed
from .device import autocast


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


def mean_over_group(loss: torch.Tensor, asked: bool, group: distributed.Group) -> tuple[torch.Tensor, bool]:
    """Under torchrun, in one collective: the step loss averaged over the processes, and whether any process of the
    group was asked to stop (Ctrl-C or SIGTERM) during the step, so that all of them stop after the same step."""
    both = group.sum(torch.stack([loss.detach().float(), torch.tensor(float(asked), device=loss.device)]))
    return both[0] / group.world_size, bool(both[1] > 0)
