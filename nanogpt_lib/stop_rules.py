"""When the loop measures the full-corpus loss, and when it stops: small pure functions of the options and the state.

A new rule is a function here, called from ``corpus_pass_reason`` or ``stopped_by``, with a unit test in
tests/test_stop_rules.py.
"""

from __future__ import annotations

from .config import TrainConfig
from .loop_state import LoopState

RECHECK_WINDOWS = 10  # with --stop_on corpus: a full-corpus pass at least every 10 log windows at the target


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
        offset = f", plus the last pass's offset {state.corpus_offset:+.6f}," if state.corpus_offset else ""
        return f"the mean step loss of the last {window} steps, {mean:.6f}{offset} predicts {predicted:.6f} <= {target}"
    if mean <= target and since >= RECHECK_WINDOWS * log_every:
        return (
            f"the mean step loss of the last {window} steps, {mean:.6f}, is at the target "
            f"and {since} steps have passed since the last pass"
        )
    return None


def corpus_pass_reason(cfg: TrainConfig, state: LoopState) -> str | None:
    """Why the full-corpus loss should be measured after this step, or None."""
    why = scheduled_pass(state.step, cfg.eval_every)
    if why is None and cfg.stop_on == "corpus":
        why = near_target_pass(state, cfg.target_loss, cfg.log_every)
    return why


def stopped_by(stop_on: str, target: float, step_loss: float, corpus_loss: float | None) -> str | None:
    """Which loss ended the run at this step ("step" or "corpus"), or None to go on."""
    if stop_on == "step" and step_loss <= target:
        return "step"
    if stop_on == "corpus" and corpus_loss is not None and corpus_loss <= target:
        return "corpus"
    return None
