"""The optimizers and the learning-rate schedule of a run.

``--optimizer adamw``: one AdamW over every parameter (weight decay on matrices and embeddings only).
``--optimizer muon``: torch's ``Muon`` (momentum orthogonalised by Newton-Schulz iterations) for the 2-D matrices
inside the transformer blocks, at its own peak rate ``--muon_lr``; AdamW for the rest: the token and position
embeddings (the LM head is tied to the token embedding), LayerNorm gains and biases. Muon is defined for hidden
matrices only; an embedding row is a lookup, not a linear map.

Both follow one schedule: every parameter group keeps its peak rate and takes ``peak x lr_factor(step)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OptimizerOptions:
    """What the optimizers are built with (``TrainConfig.optimization``)."""

    optimizer: str  # adamw, or muon for the hidden matrices
    lr: float  # AdamW's peak rate
    muon_lr: float
    muon_momentum: float
    weight_decay: float
    beta1: float
    beta2: float


@dataclass(frozen=True)
class Schedule:
    """The learning-rate schedule's options (``TrainConfig.schedule``); ``steps`` ends it where ``decay_steps`` is 0."""

    lr: float
    lr_schedule: str
    warmup_steps: int
    min_lr: float
    decay_steps: int
    cooldown_frac: float
    steps: int


def lr_at(step: int, schedule: Schedule) -> float:
    """Learning rate of optimizer step ``step`` (1-based) for a peak of ``--lr``: warm-up, then the schedule.

    - ``constant``: ``lr`` after the warm-up.
    - ``cosine``: from ``lr`` down to ``min_lr`` at ``decay_steps`` (or ``steps``), ``min_lr`` after.
    - ``wsd`` (warm-up, stable, decay): ``lr`` until the last ``cooldown_frac`` of the schedule, which ends at
      ``decay_steps`` (or ``steps``), then a straight line down to ``min_lr``, ``min_lr`` after.
    """
    if step <= schedule.warmup_steps:
        return schedule.lr * step / schedule.warmup_steps
    if schedule.lr_schedule == "constant":
        return schedule.lr
    end = schedule.decay_steps or schedule.steps
    if schedule.lr_schedule == "wsd":
        start = decay_start(schedule)
        progress = (step - start) / max(1, end - start)
        return schedule.lr - min(max(progress, 0.0), 1.0) * (schedule.lr - schedule.min_lr)
    progress = (step - schedule.warmup_steps) / max(1, end - schedule.warmup_steps)
    return schedule.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (schedule.lr - schedule.min_lr)


def decay_start(schedule: Schedule) -> int:
    """The last step at the peak rate before the ``wsd`` decay (the decay's steps follow it)."""
    end = schedule.decay_steps or schedule.steps
    return max(schedule.warmup_steps, end - round(schedule.cooldown_frac * (end - schedule.warmup_steps)))


def lr_factor(step: int, schedule: Schedule) -> float:
    """The schedule as a fraction of the peak: what every parameter group's own peak rate is multiplied by."""
    return lr_at(step, schedule) / schedule.lr


def is_hidden_matrix(name: str, param: torch.nn.Parameter) -> bool:
    """A 2-D weight inside a transformer block (attention and MLP projections): what Muon updates."""
    return param.dim() == 2 and ".h." in f".{name}"


def make_optimizers(model: torch.nn.Module, options: OptimizerOptions) -> list[torch.optim.Optimizer]:
    """AdamW (first) over what Muon does not take; Muon (second, with ``--optimizer muon``) over the hidden matrices."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    muon = [p for n, p in named if is_hidden_matrix(n, p)] if options.optimizer == "muon" else []
    taken = {id(p) for p in muon}
    rest = [p for _, p in named if id(p) not in taken]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": options.weight_decay, "peak_lr": options.lr},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0, "peak_lr": options.lr},  # biases and gains
    ]
    kwargs = dict(lr=options.lr, betas=(options.beta1, options.beta2))
    try:
        optimizers: list[torch.optim.Optimizer] = [torch.optim.AdamW(groups, fused=True, **kwargs)]
    except (RuntimeError, TypeError):  # no fused kernel for this device or dtype
        optimizers = [torch.optim.AdamW(groups, **kwargs)]
    if muon:
        optimizers.append(
            torch.optim.Muon(
                [{"params": muon, "peak_lr": options.muon_lr}],
                lr=options.muon_lr,
                weight_decay=options.weight_decay,
                momentum=options.muon_momentum,
            )
        )
    return optimizers


def set_learning_rates(optimizers: list[torch.optim.Optimizer], step: int, schedule: Schedule) -> float:
    """Give every group its rate for ``step``; returns the AdamW rate (the one logged as ``lr``)."""
    factor = lr_factor(step, schedule)
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor
    return schedule.lr * factor


def describe(optimizers: list[torch.optim.Optimizer]) -> str:
    """One line for run_config.json and the log: each optimizer, its peak rate and what it updates."""
    parts = []
    for optimizer in optimizers:
        count = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
        fused = f", fused={optimizer.defaults.get('fused')}" if isinstance(optimizer, torch.optim.AdamW) else ""
        parts.append(
            f"{type(optimizer).__name__} (peak lr {optimizer.param_groups[0]['peak_lr']:g}{fused}; "
            f"{count:,} parameters)"
        )
    return " + ".join(parts)
