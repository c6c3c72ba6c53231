"""The stop rules and the loop state on their own: pure functions of options and state, no training."""

from __future__ import annotations

import math

import pytest

from nanogpt_lib import stop_rules
from nanogpt_lib.config import TrainConfig
from nanogpt_lib.loop_state import LoopState


def state_at(step: int, losses: list[float], offset: float = 0.0, last_eval_step: int = 0) -> LoopState:
    state = LoopState.fresh(window=len(losses))
    state.step, state.corpus_offset, state.last_eval_step = step, offset, last_eval_step
    state.recent_losses.extend(losses)
    return state


@pytest.mark.parametrize(
    ("losses", "offset", "since", "runs"),
    [
        ([0.2, 0.2], 0.0, 10, False),  # far from the target
        ([0.09, 0.09], 0.0, 2, True),  # the mean is at the target
        ([0.09, 0.09], 0.0, 1, False),  # but at most one pass per log window
        ([0.05, 0.05], 0.08, 2, False),  # the last pass fell 0.08 above the mean: not yet
        ([0.05, 0.05], 0.08, 20, True),  # ... but an old offset does not hold the pass off for ever
        ([0.15, 0.15], -0.06, 2, True),  # a pass below the mean lets it run earlier
    ],
)
def test_near_target_pass(losses: list[float], offset: float, since: int, runs: bool) -> None:
    state = state_at(100, losses, offset, last_eval_step=100 - since)
    assert (stop_rules.near_target_pass(state, target=0.099999, log_every=2) is not None) == runs


def test_corpus_pass_reason_follows_the_options() -> None:
    at_target = state_at(100, [0.05, 0.05])
    assert stop_rules.corpus_pass_reason(TrainConfig(log_every=2, stop_on="step").stopping, at_target) is None
    reason = stop_rules.corpus_pass_reason(TrainConfig(log_every=2, stop_on="corpus").stopping, at_target)
    assert reason == "the mean step loss of the last 2 steps, 0.050000, is at the target (0.099999)"
    offset = stop_rules.corpus_pass_reason(
        TrainConfig(log_every=2, stop_on="corpus").stopping, state_at(100, [0.05], 0.02)
    )
    assert offset.endswith("0.050000, plus the last pass's offset +0.020000, predicts 0.070000 <= 0.099999")
    far = state_at(100, [5.0, 5.0])
    assert "--eval_every" in stop_rules.corpus_pass_reason(TrainConfig(log_every=2, eval_every=50).stopping, far)
    assert stop_rules.corpus_pass_reason(TrainConfig(log_every=2, eval_every=30).stopping, far) is None


def test_the_stop_decision() -> None:
    decide, Seen = stop_rules.decide, stop_rules.Seen
    step, corpus = (
        TrainConfig(stop_on="step", target_loss=0.1, steps=50).stopping,
        TrainConfig(stop_on="corpus", target_loss=0.1).stopping,
    )
    at = state_at(10, [0.5])
    reached = decide(step, at, Seen(0.09))
    assert (reached.rule, reached.status, reached.value, reached.what) == ("step_loss", "target_reached", 0.09,
                                                                           "one step's loss")  # fmt: skip
    assert decide(step, at, Seen(0.11, corpus_loss=0.05)) is None  # a full-corpus loss does not stop --stop_on step
    assert decide(corpus, at, Seen(0.01)) is None  # one low step is not enough
    assert decide(corpus, at, Seen(0.5, corpus_loss=0.1)).rule == "full_corpus_loss"
    nan = decide(corpus, at, Seen(float("nan"), corpus_loss=0.05))  # a loss that is not a number comes first
    assert nan.status == "diverged" and "diverged" in nan.message and nan.record()["value"] == "nan"
    assert decide(step, state_at(50, [0.5]), Seen(0.5)).rule == "steps"  # --steps done: completed
    assert decide(step, state_at(50, [0.5]), Seen(0.05)).rule == "step_loss"  # the target beats --steps
    assert decide(corpus, at, Seen(0.5, tokens_seen=100, token_cap=100)).rule == "token_cap"
    assert decide(corpus, at, Seen(0.5, tokens_seen=99, token_cap=100)) is None
    timed = state_at(10, [0.5])
    timed.timers["train_s"] = 30.0
    assert decide(corpus, timed, Seen(0.5, time_cap_s=30.0)).status == "completed"


def test_loop_state_records_and_round_trips() -> None:
    state = LoopState.fresh(window=3)
    for step, loss in enumerate([3.0, 0.08, 0.5, 0.07], start=1):
        state.step = step
        state.record(loss, target=0.1)
    assert list(state.recent_losses) == [0.08, 0.5, 0.07]  # the last `window` steps
    assert (state.best_step, state.best_step_loss) == (4, 0.07)
    assert (state.target_step, state.target_step_loss) == (2, 0.08)  # the first step at the target
    state.record_corpus_loss(0.25)
    assert state.last_eval_step == 4 and math.isclose(state.corpus_offset, 0.25 - (0.08 + 0.5 + 0.07) / 3)
    saved = state.to_dict(elapsed_s=12.5)
    assert set(saved) == {"step", "best_step_loss", "best_step", "best_saved_loss", "recent_losses", "target_step",
                          "target_step_loss", "last_eval_step", "corpus_offset", "timers"}  # fmt: skip
    again = LoopState.from_dict(saved, window=3)
    assert again.to_dict(elapsed_s=12.5) == saved and again.timers["elapsed_s"] == 12.5


def test_loop_state_reads_checkpoints_from_before_the_full_corpus_rule() -> None:
    saved = LoopState.fresh(window=2).to_dict(elapsed_s=1.0)
    del saved["last_eval_step"], saved["corpus_offset"]
    state = LoopState.from_dict(saved, window=2)
    assert state.last_eval_step == 0 and state.corpus_offset == 0.0
