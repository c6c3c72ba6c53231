"""The full-corpus loss: the model in eval mode over every window of the whole token stream."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data import eval_windows
from .device import autocast
from .distributed import Group

SINGLE = Group()  # one process: nothing to reduce


@torch.no_grad()
def corpus_loss(
    model: torch.nn.Module,
    tokens: np.ndarray,
    seq_len: int,
    batch_size: int,
    device: torch.device,
    amp: str,
    group: Group = SINGLE,
) -> float:
    """Mean cross-entropy over every token of ``tokens`` after the first, each predicted exactly once.

    The stream is cut into consecutive non-overlapping windows of ``seq_len`` (see ``data.eval_windows``),
    so each prediction sees between 0 and ``seq_len - 1`` tokens of context, as in training. Under torchrun
    (``group``) each process takes every n-th batch and the sums are added up over the processes.
    """
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    try:
        for i, (x, y) in enumerate(eval_windows(tokens, seq_len, batch_size)):
            if i % group.world_size != group.rank:
                continue
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, amp):
                logits, _ = model(x)
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").double()
            count += y.numel()
    finally:
        model.train(was_training)
    sums = group.sum(torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=device)]))
    return (sums[0] / sums[1]).item()
