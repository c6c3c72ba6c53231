"""Bad input: one clear line on stderr, exit status 2, no traceback, nothing already written lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from nanogpt_lib import sample, train
from nanogpt_lib.errors import EXIT_USER_ERROR, run_cli

from .conftest import run_module, tiny_args


def fails_cleanly(capsys, main, argv: list[str], message: str) -> str:
    """Run an entry point in-process; assert exit 2 and a single `error:` line containing ``message``."""
    assert run_cli(main, argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert message in err, err
    return err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def finished_run(small_corpus: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    assert run_cli(train.main, tiny_args(small_corpus, out, "--steps", "2")) == 0
    return out


def test_missing_input_file_says_where_to_put_it(capsys, tmp_path: Path) -> None:
    err = fails_cleanly(capsys, train.main, tiny_args(tmp_path / "nope.txt", tmp_path / "out"), "not found")
    assert "data/README.md" in err and "python -m nanogpt_lib.download" in err
    assert not (tmp_path / "out").exists()  # never trains on nothing, never creates a run


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"  \n\n ", "is empty"),
        (b"To be or not", "fewer than --seq_len + 1 = 33"),
        (b"caf\xe9 au lait " * 50, "is not UTF-8 text (byte 0xe9 at offset 3)"),
    ],
)
def test_unusable_input_file(capsys, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "input.txt"
    path.write_bytes(content)
    fails_cleanly(capsys, train.main, tiny_args(path, tmp_path / "out"), message)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps", "0"], "--steps must be a positive integer"),
        (["--batch_size", "0"], "--batch_size must be a positive integer"),
        (["--seq_len", "-4"], "--seq_len must be a positive integer"),
        (["--grad_accum", "0"], "--grad_accum must be a positive integer"),
        (["--seq_len", "257"], "longer than the tiny context of 256"),
        (["--lr", "-0.001"], "--lr must be > 0"),
        (["--temperature", "0"], "--temperature must be > 0"),
        (["--log_every", "-1"], "--log_every must be a positive integer"),
    ],
)
def test_bad_flags(capsys, small_corpus: Path, tmp_path: Path, flags: list[str], message: str) -> None:
    fails_cleanly(capsys, train.main, tiny_args(small_corpus, tmp_path / "out", *flags), message)
    assert not (tmp_path / "out").exists()


def test_out_dir_below_a_regular_file(capsys, small_corpus: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    fails_cleanly(capsys, train.main, tiny_args(small_corpus, blocker / "run"), "cannot create the run directory")
    assert blocker.read_text() == "I am a file"


def test_existing_run_is_not_overwritten_by_accident(capsys, small_corpus: Path, finished_run: Path) -> None:
    before = digest(finished_run / "checkpoints" / "last.pt")
    fails_cleanly(capsys, train.main, tiny_args(small_corpus, finished_run), "already holds a run")
    assert digest(finished_run / "checkpoints" / "last.pt") == before
    assert run_cli(train.main, tiny_args(small_corpus, finished_run, "--steps", "1", "--overwrite")) == 0
    assert "step 2/" not in (finished_run / "logs" / "train.log").read_text()


def test_resume_with_another_model_shape_leaves_the_checkpoint_alone(
    capsys, small_corpus: Path, finished_run: Path
) -> None:
    last = finished_run / "checkpoints" / "last.pt"
    before = digest(last)
    argv = [a if a != "tiny" else "gpt2-124m" for a in tiny_args(small_corpus, finished_run, "--resume")]
    fails_cleanly(capsys, train.main, argv, "holds a model of another shape")
    assert digest(last) == before


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "foreign pickle", "weights only"])
def test_unreadable_checkpoint(capsys, small_corpus: Path, finished_run: Path, damage: str) -> None:
    last = finished_run / "checkpoints" / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
        message = "cannot be read"
    elif damage == "random bytes":
        last.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
        message = "cannot be read"
    elif damage == "foreign pickle":  # weights_only=True refuses to build arbitrary objects
        torch.save({"format_version": 1, "payload": Path("/")}, last)
        message = "cannot be read"
    else:
        last.write_bytes((finished_run / "checkpoints" / "best.pt").read_bytes())
        message = "holds weights only"
    before = digest(last)
    fails_cleanly(capsys, train.main, tiny_args(small_corpus, finished_run, "--resume"), message)
    assert digest(last) == before
    if damage != "weights only":  # a weights-only file is a valid checkpoint for sampling
        fails_cleanly(capsys, sample.main, ["--checkpoint", str(last), "--device", "cpu"], message)


def test_sample_rejects_bad_settings(capsys, finished_run: Path) -> None:
    best = str(finished_run / "checkpoints" / "best.pt")
    fails_cleanly(capsys, sample.main, ["--checkpoint", best, "--temperature", "0"], "--temperature must be > 0")
    fails_cleanly(capsys, sample.main, ["--checkpoint", best, "--top_k", "-3"], "--top_k must be >= 0")


def test_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    result = run_module("nanogpt_lib.train", *tiny_args(tmp_path / "missing.txt", tmp_path / "out"))
    assert result.returncode == EXIT_USER_ERROR
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: input file")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    result = run_module("nanogpt_lib.sample", "--checkpoint", str(bad), "--device", "cpu")
    assert result.returncode == EXIT_USER_ERROR and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_tokenizer_is_reported_before_any_training(capsys, small_corpus: Path, tmp_path: Path, monkeypatch):
    """Token ids may come from the cache, but samples need the tokenizer: no internet must fail at once."""
    import tiktoken

    from nanogpt_lib import tokenizer

    def offline(name):
        raise ConnectionError("no internet")

    tokenizer.encode_file(small_corpus)  # the token-id cache exists, as after an earlier run
    monkeypatch.setattr(tokenizer, "packaged_bpe_files", lambda: None)  # the package that ships the files is missing
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    tokenizer.get_tokenizer.cache_clear()
    try:
        fails_cleanly(capsys, train.main, tiny_args(small_corpus, tmp_path / "out"), "TIKTOKEN_CACHE_DIR")
    finally:
        tokenizer.get_tokenizer.cache_clear()
    assert not (tmp_path / "out").exists()
