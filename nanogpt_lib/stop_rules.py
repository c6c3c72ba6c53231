"""When the loop measures the full-corpus loss, and when it stops: small pure functions of the options and the state.

``decide`` is the one stop decision, for the training loop and the sweep alike: it asks each rule of ``RULES`` in
turn and returns the first ``Stop``, which summary.json records (``stopped_by``, ``stop``) and the report reads. A
new stop rule is one function of ``(options, state, seen)`` added to ``RULES`` (maybe with an option in TrainConfig
and ``StopOptions``), with a unit test in tests/test_stop_rules.py. ``options`` are the run's ``StopOptions``
(``TrainConfig.stopping``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .loop_state import LoopState

RECHECK_WINDOWS = 10  # with --stop_on corpus: a full-corpus pass at least every 10 log windows at the target


@dataclass(frozen=True)
class StopOptions:
    """The options the stop rules and the full-corpus passes read (``TrainConfig.stopping``)."""

    target_loss: float
    stop_on: str  # step or corpus: which loss must reach the target
    steps: int
    eval_every: int  # a full-corpus pass every N steps (0: none on a schedule)
    log_every: int  # the running mean of the last N step losses predicts the full-corpus loss


def scheduled_pass(step: int, eval_every: int) -> str | None:
    """A pass every ``eval_every`` steps (0: never)."""
    if eval_every and step % eval_every == 0:
        return f"every {eval_every} steps (--eval_every)"
    return None


def near_target_pass(state: LoopState, target: float, log_every: int) -> str | None:
    """A pass when the step losses say the full-corpus loss may be at the target (at most once per log window).

    The pass costs as much as many training steps, so it runs only when the running mean of the step losses,
    corrected by how far the previous pass fell from that mean, predicts a full-corpus loss at the target. An
    offset measured once must not hold the pass off for ever: once the step losses alone are at the target, a pass
    runs at least every RECHECK_WINDOWS log windows.
    """
    since = state.step - state.last_eval_step
    if since < min(log_every, state.step) or not state.recent_losses:
        return None
    mean = state.recent_mean
    predicted = mean + state.corpus_offset
    window = len(state.recent_losses)
    if predicted <= target:
        said = f"the mean step loss of the last {window} steps, {mean:.6f},"
        if not state.corpus_offset:
            return f"{said} is at the target ({target})"
        return f"{said} plus the last pass's offset {state.corpus_offset:+.6f}, predicts {predicted:.6f} <= {target}"
    if mean <= target and since >= RECHECK_WINDOWS * log_every:
        return (
            f"the mean step loss of the last {window} steps, {mean:.6f}, is at the target "
            f"and {since} steps have passed since the last pass"
        )
    return None


def corpus_pass_reason(options: StopOptions, state: LoopState) -> str | None:
    """Why the full-corpus loss should be measured after this step, or None."""
    why = scheduled_pass(state.step, options.eval_every)
    if why is None and options.stop_on == "corpus":
        why = near_target_pass(state, options.target_loss, options.log_every)
    return why


@dataclass(frozen=True)
class Seen:
    """What a rule may look at besides the options and the loop's state: this step's losses and what the run has
    used up. ``token_cap`` and ``time_cap_s`` bound a sweep's trials (None: no cap)."""

    step_loss: float
    corpus_loss: float | None = None  # measured after this step, or None
    tokens_seen: int = 0
    token_cap: int | None = None
    time_cap_s: float | None = None


@dataclass(frozen=True)
class Stop:
    """Why a run ends at this step: the rule (summary.json's ``stopped_by``), how the run ended (its ``status``),
    the value that decided, what that value is in words, and the line for the log."""

    rule: str
    status: str  # target_reached, diverged or completed
    value: float | None
    what: str
    message: str

    def record(self) -> dict[str, object]:
        """The ``stop`` entry of summary.json (without the log line; a value that is not a number as text, as JSON
        has no NaN)."""
        value = self.value if self.value is None or math.isfinite(self.value) else str(self.value)
        return {**{k: v for k, v in asdict(self).items() if k != "message"}, "value": value}


def diverged(options: StopOptions, state: LoopState, seen: Seen) -> Stop | None:
    if math.isfinite(seen.step_loss):
        return None
    return Stop(
        "diverged",
        "diverged",
        seen.step_loss,
        "the step loss",
        f"the loss became {seen.step_loss} at step {state.step}: training diverged",
    )


def step_loss_at_target(options: StopOptions, state: LoopState, seen: Seen) -> Stop | None:
    if options.stop_on != "step" or seen.step_loss > options.target_loss:
        return None
    return Stop(
        "step_loss",
        "target_reached",
        seen.step_loss,
        "one step's loss",
        f"Target reached: step loss {seen.step_loss:.6f} <= {options.target_loss} at step {state.step}",
    )


def corpus_loss_at_target(options: StopOptions, state: LoopState, seen: Seen) -> Stop | None:
    if options.stop_on != "corpus" or seen.corpus_loss is None or seen.corpus_loss > options.target_loss:
        return None
    return Stop(
        "full_corpus_loss",
        "target_reached",
        seen.corpus_loss,
        "the full-corpus loss",
        f"Target reached: full-corpus loss {seen.corpus_loss:.6f} <= {options.target_loss} at step {state.step}",
    )


def all_steps_done(options: StopOptions, state: LoopState, seen: Seen) -> Stop | None:
    if state.step < options.steps:
        return None
    return Stop(
        "steps", "completed", state.step, "--steps", f"All {options.steps} steps done without reaching the target"
    )


def token_cap(options: StopOptions, state: LoopState, seen: Seen) -> Stop | None:
    if seen.token_cap is None or seen.tokens_seen < seen.token_cap:
        return None
    return Stop("token_cap", "completed", seen.tokens_seen, "the token cap", f"token cap ({seen.token_cap:,})")


def time_cap(options: StopOptions, state: LoopState, seen: Seen) -> Stop | None:
    if seen.time_cap_s is None or state.timers["train_s"] < seen.time_cap_s:
        return None
    return Stop("time_cap", "completed", state.timers["train_s"], "the time cap", f"time cap ({seen.time_cap_s:g} s)")


Rule = Callable[[StopOptions, LoopState, Seen], "Stop | None"]
# In order: a loss that is not a number ends the run before anything else reads it; reaching the target beats a cap
# reached at the same step.
RULES: tuple[Rule, ...] = (diverged, step_loss_at_target, corpus_loss_at_target, all_steps_done, token_cap, time_cap)


def decide(options: StopOptions, state: LoopState, seen: Seen) -> Stop | None:
    """What stops the run after the step ``state.step`` (its losses in ``seen``), or None to go on."""
    for rule in RULES:
        stop = rule(options, state, seen)
        if stop is not None:
            return stop
    return None
