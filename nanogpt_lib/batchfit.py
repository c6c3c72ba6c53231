"""``--batch_size auto``: the micro-batch for this machine, with the tokens of an optimizer step kept exactly.

A step of ``S`` sequences (``--tokens_per_step`` / ``--seq_len``) is taken as ``S / b`` micro-batches of ``b``
sequences, ``b`` a divisor of ``S``, so the optimizer sees the same steps and the same schedule whatever ``b`` is.

On a CUDA GPU ``b`` is the largest divisor whose forward and backward fit the card, found before step 1 by trying
them on a throwaway model (eager, which holds more memory than the compiled model) while holding the memory that
AdamW's two moments will take: a try that raises torch's out-of-memory error, or whose peak leaves less than a tenth
of the card free, does not fit. A resumed run tries the micro-batch it started with first, so that it keeps it on
the same card and re-fits (saying so) on a smaller one.

On a CPU or Apple MPS nothing runs out: ``b`` is the largest divisor with at most ``CPU_MICRO_BATCH_TOKENS`` tokens,
the micro-batch of the committed CPU runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .device import Decision, Machine, autocast
from .errors import UserError

CPU_MICRO_BATCH_TOKENS = 8 * 256
HEADROOM = 0.9  # the share of the card a fit may use: the rest for the allocator's fragmentation over a long run
ADAMW_STATE_BYTES_PER_PARAM = 8  # two fp32 moments


def divisors_down(sequences: int, start: int | None = None) -> list[int]:
    """The micro-batches that keep a step of ``sequences`` sequences exact, largest first (none above ``start``)."""
    return [b for b in range(sequences, 0, -1) if sequences % b == 0 and (start is None or b <= start)]


def largest_fit(sequences: int, fits: Callable[[int], bool], start: int | None = None) -> tuple[int, list[int]]:
    """The largest exact micro-batch that ``fits``, and the larger ones that did not."""
    too_big = []
    for size in divisors_down(sequences, start):
        if fits(size):
            return size, too_big
        too_big.append(size)
    raise UserError(
        f"not even one sequence of this --seq_len fits this GPU's memory (tried {', '.join(map(str, too_big))}); "
        f"use a smaller --seq_len or --model"
    )


def peak_bytes(device: torch.device) -> int:
    """The most memory that tensors held on ``device`` since its peak was last reset (CUDA; 0 elsewhere)."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


def memory_probe(
    model: torch.nn.Module, seq_len: int, device: torch.device, amp: str, limit_bytes: int | None, held_bytes: int
) -> Callable[[int], bool]:
    """``fits(b)``: whether a forward and backward of ``b`` sequences of ``model`` fit, with ``held_bytes`` held aside
    and (on CUDA) a peak within ``HEADROOM`` of ``limit_bytes``. Gradients and freed blocks are given back after
    each try."""
    vocab = model.config.vocab_size

    def fits(size: int) -> bool:
        held = torch.empty(held_bytes, dtype=torch.uint8, device=device)
        x = torch.randint(vocab, (size, seq_len), device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            with autocast(device, amp):
                loss = model(x, x)[1]
            loss.backward()
            del loss
            ok = limit_bytes is None or peak_bytes(device) <= HEADROOM * limit_bytes
        except torch.OutOfMemoryError:
            ok = False
        del held, x
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return ok

    return fits


def micro_batch_decision(
    batch_size: int | str,
    sequences: int,
    seq_len: int,
    machine: Machine,
    fits: Callable[[int], bool] | None = None,
    started_with: int | None = None,
) -> Decision:
    """The micro-batch and accumulation, ``Decision((batch_size, grad_accum), reason, warning)``, for a step of
    ``sequences`` sequences of ``seq_len`` tokens. ``fits`` (``memory_probe``) is asked on a CUDA GPU;
    ``started_with`` is the micro-batch a resumed run started with."""
    step = f"{sequences * seq_len:,} tokens per step"
    if batch_size != "auto":
        return Decision((batch_size, sequences // batch_size), f"--batch_size {batch_size} as given; {step}")
    if machine.device.type != "cuda" or fits is None:
        size = next(b for b in divisors_down(sequences) if b * seq_len <= CPU_MICRO_BATCH_TOKENS or b == 1)
        return Decision(
            (size, sequences // size),
            f"auto: at most {CPU_MICRO_BATCH_TOKENS:,} tokens per micro-batch on {machine.device.type}; {step}",
        )
    size, too_big = largest_fit(sequences, fits, started_with)
    memory = f"{machine.memory_bytes / 2**30:.1f} GiB of {machine.card}" if machine.memory_bytes else machine.card
    decision = (size, sequences // size)
    if started_with is not None and size < started_with:
        line = (
            f"auto: the run's micro-batch of {started_with} does not fit the {memory}: {size} x {sequences // size} "
            f"now, the same {step}"
        )
        return Decision(decision, line, warning=line)
    if started_with is not None:
        return Decision(decision, f"auto: the run's micro-batch, which fits the {memory}; {step}")
    larger = f"; {', '.join(map(str, too_big))} did not" if too_big else ""
    return Decision(decision, f"auto: the largest that fits the {memory}{larger}; {step}")


def gpu_probe(
    model: torch.nn.Module, seq_len: int, machine: Machine, amp: str, processes: int
) -> Callable[[int], bool]:
    """``memory_probe`` for a run of ``model``'s shape on this GPU: AdamW's moments held aside (and, under DDP, the
    gradient buckets, another copy of the gradients)."""
    params = sum(p.numel() for p in model.parameters())
    held = params * (ADAMW_STATE_BYTES_PER_PARAM + (4 if processes > 1 else 0))
    return memory_probe(model, seq_len, machine.device, amp, machine.memory_bytes, held)
