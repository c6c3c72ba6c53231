"""The token stream and its batches.

Training batches are windows of ``seq_len + 1`` tokens at random offsets: ``x`` is the window without
its last token, ``y`` the window without its first, so position t of ``y`` is the token that follows
position t of ``x``. Offsets come from a seeded generator whose state goes into the checkpoint, so a
resumed run draws exactly the batches the uninterrupted run would have drawn.

Evaluation uses a deterministic pass instead: the stream cut into consecutive windows, so that every
token after the first is predicted exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .errors import UserError


class Batches:
    """Random (x, y) training windows of one token stream, drawn on ``device``."""

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, device: torch.device | str, seed: int):
        if len(tokens) < seq_len + 1:
            raise UserError(
                f"the input has {len(tokens)} tokens, fewer than --seq_len + 1 = {seq_len + 1}; "
                f"use a longer file or a smaller --seq_len"
            )
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.device = torch.device(device)
        self.num_tokens = len(tokens)
        # The whole corpus lives on the device (0.7 MB as int64 for tiny-shakespeare): a batch is one gather.
        self.tokens = torch.from_numpy(tokens.astype(np.int64)).to(self.device)
        self.offsets = torch.arange(seq_len + 1, device=self.device)
        self.generator = torch.Generator().manual_seed(seed)
        self.tokens_seen = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(self.num_tokens - self.seq_len, (self.batch_size, 1), generator=self.generator)
        windows = self.tokens[starts.to(self.device, non_blocking=True) + self.offsets]  # (B, T+1)
        self.tokens_seen += self.batch_size * self.seq_len
        return windows[:, :-1], windows[:, 1:]

    @property
    def epochs(self) -> float:
        """Pseudo-epochs: tokens trained on divided by the corpus size (windows overlap, so not exact passes)."""
        return self.tokens_seen / self.num_tokens

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "tokens_seen": self.tokens_seen}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.tokens_seen = int(state["tokens_seen"])


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
