"""The token stream and its batches.

Training batches are windows of ``seq_len + 1`` tokens: ``x`` is the window without its last token, ``y``
the window without its first, so position t of ``y`` is the token that follows position t of ``x``. Two ways
to place them (``--sampling``):

- ``random``: each window at an offset drawn uniformly; over a run some tokens are seen more often than others.
- ``epoch``: passes over the corpus. Each pass cuts the stream into consecutive windows and visits them in a
  fresh random order; every token is a target once per pass. Where the cuts fall (``window_order``):
  ``random_phase`` starts each pass at a random phase (0 .. seq_len - 1, so window boundaries move from pass to
  pass); ``measured`` starts every pass at phase 0, on exactly the windows of the full-corpus loss (below);
  ``measured_in_decay`` draws random phases until the token count at which the learning rate starts to decay
  (``measured_from_tokens``) and phase 0 for every pass that begins after it. ``aligned_after_passes`` N > 0 makes
  the passes after the first N start at phase 0 too. A model with learned absolute positions partly memorises
  where in a window each token falls: trained on one cut only, it knows the text at that cut and little
  elsewhere; trained on random cuts, its loss at the measured cut stays a little above its loss at the cut of its
  latest pass. The phase is drawn even when it is not used, so every order draws the same stream of numbers.

Offsets come from a seeded generator whose state goes into the checkpoint (with the current pass, for
``epoch``), so a resumed run draws exactly the batches the uninterrupted run would have drawn.

Under torchrun every process holds the same generator and draws the windows of the whole step's batch
(``batch_size`` × the number of processes), then keeps its own consecutive share: the processes see disjoint
windows (and disjoint shares of each pass), and together exactly the batch one process would draw at
``batch_size`` × their number.

Evaluation uses a deterministic pass instead: the stream cut into consecutive windows, so that every
token after the first is predicted exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .errors import UserError

# the choices of --sampling and --window_order (config.py offers them; TrainConfig.validate checks them)
SAMPLINGS = ("random", "epoch")
# epoch sampling: where each pass cuts the corpus into windows
WINDOW_ORDERS = ("random_phase", "measured", "measured_in_decay")


@dataclass(frozen=True)
class Windows:
    """The options that say which windows a run trains on (``TrainConfig.windows``): ``batch_size`` windows of
    ``seq_len`` tokens per draw, from a generator seeded with ``seed``, placed as ``sampling`` and ``window_order`` say
    (see the module's text)."""

    batch_size: int
    seq_len: int
    seed: int
    sampling: str = "random"
    window_order: str = "random_phase"
    aligned_after_passes: int = 0  # epoch sampling: the passes after this many start at phase 0 (0: never)


class Batches:
    """(x, y) training windows of one token stream, drawn on ``device`` as ``windows`` say. Under torchrun, process
    ``rank`` of ``world_size`` keeps its share of every draw. ``measured_from_tokens``: with ``window_order``
    ``measured_in_decay``, the tokens seen when the learning rate starts to decay."""

    def __init__(
        self,
        tokens: np.ndarray,
        windows: Windows,
        device: torch.device | str,
        rank: int = 0,
        world_size: int = 1,
        measured_from_tokens: int | None = None,
    ):
        batch_size, seq_len, window_order = windows.batch_size, windows.seq_len, windows.window_order
        if window_order == "measured_in_decay" and measured_from_tokens is None:
            raise UserError("--window_order measured_in_decay needs the token count at which the decay begins")
        if len(tokens) < seq_len + 1:
            raise UserError(
                f"the input has {len(tokens)} tokens, fewer than --seq_len + 1 = {seq_len + 1}; "
                f"use a longer file or a smaller --seq_len"
            )
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.seq_len = seq_len
        self.device = torch.device(device)
        self.num_tokens = len(tokens)
        # The whole corpus lives on the device (0.7 MB as int64 for tiny-shakespeare): a batch is one gather.
        self.tokens = torch.from_numpy(tokens.astype(np.int64)).to(self.device)
        self.offsets = torch.arange(seq_len + 1, device=self.device)
        self.generator = torch.Generator().manual_seed(windows.seed)
        self.tokens_seen = 0
        self.sampling = windows.sampling
        self.aligned_after_passes = windows.aligned_after_passes
        self.window_order = window_order
        self.measured_from_tokens = measured_from_tokens  # measured_in_decay: passes begun after this are at phase 0
        self.passes = 0  # epoch sampling: passes begun so far
        self.pass_starts = torch.zeros(0, dtype=torch.int64)  # window starts of the current pass, in visiting order
        self.pass_position = 0  # how many of them were drawn

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        count = self.batch_size * self.world_size  # the windows of all processes; this one keeps its share
        if self.sampling == "random":
            starts = torch.randint(self.num_tokens - self.seq_len, (count,), generator=self.generator)
        else:
            starts = self._epoch_starts(count)
        starts = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        windows = self.tokens[starts.to(self.device, non_blocking=True)[:, None] + self.offsets]  # (B, T+1)
        self.tokens_seen += count * self.seq_len  # by all processes
        return windows[:, :-1], windows[:, 1:]

    def _epoch_starts(self, count: int) -> torch.Tensor:
        """The next ``count`` window starts of the current pass, beginning new passes as they run out."""
        taken = []
        while count:
            if self.pass_position == len(self.pass_starts):
                phases = min(self.seq_len, self.num_tokens - self.seq_len)  # each leaves room for a window
                phase = int(torch.randint(phases, (1,), generator=self.generator))
                if self._measured_pass():
                    phase = 0  # the windows of the full-corpus loss (drawn all the same: one stream of draws)
                n_windows = (self.num_tokens - 1 - phase) // self.seq_len
                order = torch.randperm(n_windows, generator=self.generator)
                self.pass_starts, self.pass_position = phase + order * self.seq_len, 0
                self.passes += 1
            chunk = self.pass_starts[self.pass_position : self.pass_position + count]
            self.pass_position += len(chunk)
            count -= len(chunk)
            taken.append(chunk)
        return torch.cat(taken)

    def _measured_pass(self) -> bool:
        """Whether the pass about to begin starts at phase 0 (see the module's text)."""
        if 0 < self.aligned_after_passes <= self.passes or self.window_order == "measured":
            return True
        return self.window_order == "measured_in_decay" and self.tokens_seen >= self.measured_from_tokens

    @property
    def epochs(self) -> float:
        """Pseudo-epochs: tokens trained on divided by the corpus size (windows overlap, so not exact passes)."""
        return self.tokens_seen / self.num_tokens

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "tokens_seen": self.tokens_seen,
            "sampling": self.sampling,
            "passes": self.passes,
            "pass_starts": self.pass_starts.clone(),
            "pass_position": self.pass_position,
            "seq_len": self.seq_len,
            "num_tokens": self.num_tokens,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        sampling = state.get("sampling", "random")
        if sampling != self.sampling:
            raise UserError(f"the checkpoint was trained with --sampling {sampling}; resume with the same --sampling")
        world_size = int(state.get("world_size", 1))
        if world_size != self.world_size:
            raise UserError(
                f"the checkpoint was trained by {world_size} process(es) and this run has {self.world_size}: resume "
                f"with the same torchrun --nproc_per_node (each process's share of the batches depends on it)"
            )
        if sampling == "epoch":  # the pass in progress is a list of window starts into this corpus at this length
            if int(state.get("seq_len", self.seq_len)) != self.seq_len:
                raise UserError(f"the checkpoint was trained with --seq_len {state['seq_len']}; resume with it")
            if int(state.get("num_tokens", self.num_tokens)) != self.num_tokens:
                raise UserError(
                    f"the checkpoint was trained on a corpus of {state['num_tokens']:,} tokens and this input has "
                    f"{self.num_tokens:,}: resume with the same --input_file"
                )
        self.generator.set_state(state["generator"])
        self.tokens_seen = int(state["tokens_seen"])
        self.passes = int(state.get("passes", 0))
        self.pass_starts = state.get("pass_starts", torch.zeros(0, dtype=torch.int64)).to(torch.int64)
        self.pass_position = int(state.get("pass_position", 0))


def eval_windows(tokens: np.ndarray, seq_len: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive, non-overlapping (x, y) windows covering the stream once, in batches (on the CPU).

    Every token but the first is a target exactly once. The last window may be shorter; it forms a
    batch of its own so that no padding is needed.
    """
    ids = torch.from_numpy(tokens.astype(np.int64))
    num_targets = len(ids) - 1
    full = num_targets // seq_len
    x = ids[: full * seq_len].view(full, seq_len)
    y = ids[1 : full * seq_len + 1].view(full, seq_len)
    for start in range(0, full, batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]
    rest = num_targets - full * seq_len
    if rest:
        yield ids[full * seq_len : num_targets].unsqueeze(0), ids[full * seq_len + 1 :].unsqueeze(0)
