"""The training loop's progress, as one type: what ``last.pt`` carries (its ``loop`` entry) for an exact resume."""

from __future__ import annotations

import collections
import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Seconds (and the token count behind tokens/s) that the summary reports, summed over every session of a run.
TIMERS = ("elapsed_s", "train_s", "train_tokens", "warmup_s", "checkpoint_s", "sample_s", "eval_s", "lost_s")


@dataclass
class Lap:
    """The seconds one timed phase took, known when its ``with`` block ends."""

    seconds: float = 0.0


class Timers:
    """The run's time by phase, summed over every session (last.pt carries the totals): ``with timers.phase(name)``
    times a block and adds it to its total; ``elapsed()`` is the wall time of every session so far."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = dict.fromkeys(TIMERS, 0.0)
        self.session_start = time.perf_counter()
        self.mark = (0.0, 0.0)  # training tokens and seconds at the last log row

    def __getitem__(self, name: str) -> float:
        return self.totals[name]

    def __setitem__(self, name: str, value: float) -> None:
        self.totals[name] = value

    def add(self, name: str, amount: float) -> None:
        self.totals[name] += amount

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[Lap]:
        lap, start = Lap(), time.perf_counter()
        try:
            yield lap
        finally:
            lap.seconds = time.perf_counter() - start
            self.totals[name] += lap.seconds

    def start_session(self) -> None:
        self.session_start = time.perf_counter()
        self.mark = (self.totals["train_tokens"], self.totals["train_s"])

    def rate_since_last_row(self) -> float:
        """Training tokens per second since the last log row (or the session's start), for the log row being
        written: each call starts the next interval, so only the log row calls it."""
        tokens, seconds = self.totals["train_tokens"] - self.mark[0], self.totals["train_s"] - self.mark[1]
        self.mark = (self.totals["train_tokens"], self.totals["train_s"])
        return tokens / seconds if seconds > 0 else float("nan")

    def elapsed(self) -> float:
        """Wall time of the run so far: the earlier sessions' total, and this one's."""
        return self.totals["elapsed_s"] + (time.perf_counter() - self.session_start)


@dataclass
class LoopState:
    """Where the loop stands: the step, the losses that the stop rules and best.pt look at, and the timers."""

    step: int = 0
    best_step_loss: float = math.inf  # the lowest single step loss, and its step
    best_step: int = 0
    best_saved_loss: float = math.inf  # the loss best.pt was saved with
    recent_losses: collections.deque[float] = field(default_factory=collections.deque)  # the last log_every steps
    target_step: int | None = None  # the first step whose loss was at the target, and that loss
    target_step_loss: float | None = None
    last_eval_step: int = 0  # the step of the last full-corpus pass
    corpus_offset: float = 0.0  # full-corpus loss minus the mean of recent_losses, at that pass
    timers: Timers = field(default_factory=Timers)

    @classmethod
    def fresh(cls, window: int) -> LoopState:
        """The state before step 1, keeping the losses of the last ``window`` steps."""
        return cls(recent_losses=collections.deque(maxlen=window))

    @classmethod
    def from_dict(cls, loop: dict[str, Any], window: int) -> LoopState:
        """The state saved by ``to_dict`` (checkpoints from before the full-corpus pass rule lack its two keys)."""
        state = cls.fresh(window)
        state.step = int(loop["step"])
        state.best_step_loss, state.best_step = float(loop["best_step_loss"]), int(loop["best_step"])
        state.best_saved_loss = float(loop["best_saved_loss"])
        state.recent_losses.extend(float(x) for x in loop["recent_losses"])
        state.target_step, state.target_step_loss = loop.get("target_step"), loop.get("target_step_loss")
        state.last_eval_step = int(loop.get("last_eval_step", 0))
        state.corpus_offset = float(loop.get("corpus_offset", 0.0))
        state.timers.totals.update({k: float(v) for k, v in loop["timers"].items()})
        return state

    def to_dict(self, elapsed_s: float) -> dict[str, Any]:
        """The ``loop`` entry of last.pt, with the wall time so far."""
        return {
            "step": self.step,
            "best_step_loss": self.best_step_loss,
            "best_step": self.best_step,
            "best_saved_loss": self.best_saved_loss,
            "recent_losses": list(self.recent_losses),
            "target_step": self.target_step,
            "target_step_loss": self.target_step_loss,
            "last_eval_step": self.last_eval_step,
            "corpus_offset": self.corpus_offset,
            "timers": {**self.timers.totals, "elapsed_s": elapsed_s},
        }

    @property
    def recent_mean(self) -> float:
        return sum(self.recent_losses) / max(1, len(self.recent_losses))

    def record(self, loss: float, target: float) -> None:
        """Take in the loss of the step just done (``self.step``); one that is not a number is left out (the run
        ends at it: see stop_rules.diverged)."""
        if not math.isfinite(loss):
            return
        self.recent_losses.append(loss)
        if loss < self.best_step_loss:
            self.best_step_loss, self.best_step = loss, self.step
        if loss <= target and self.target_step is None:
            self.target_step, self.target_step_loss = self.step, loss

    def record_corpus_loss(self, loss: float) -> None:
        """Take in a full-corpus loss measured after ``self.step``."""
        self.last_eval_step = self.step
        self.corpus_offset = loss - self.recent_mean
