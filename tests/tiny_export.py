"""A tiny trained model and its Hugging Face export, for the export and Space tests."""

from __future__ import annotations

from pathlib import Path

from nanogpt_lib import export, train
from nanogpt_lib.errors import run_cli

from .conftest import tiny_args, write_small_corpus


def train_tiny(folder: Path) -> Path:
    """A run directory of the tiny model after a few seconds of training on the small corpus."""
    corpus = write_small_corpus(folder)
    run = folder / "run"
    assert run_cli(train.main, tiny_args(corpus, run, "--steps", "8")) == 0
    return run


def export_run(run: Path, out: Path, *flags: str) -> Path:
    assert run_cli(export.main, ["--checkpoint", str(run / "checkpoints" / "best.pt"), "--out", str(out), *flags]) == 0
    return out
