"""Shared fixtures: the course file, small corpora and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Deterministic CPU threading before torch is first imported (see nanogpt_lib/__init__.py).
os.environ.setdefault("MKL_DYNAMIC", "FALSE")


def _course_file() -> Path:
    candidate = ROOT / "data" / "input.txt"
    if candidate.is_file():
        return candidate
    raise FileNotFoundError("tests need the course's input.txt in data/ (see data/README.md)")


@pytest.fixture(scope="session")
def course_file() -> Path:
    return _course_file()


def write_small_corpus(folder: Path) -> Path:
    """folder/small.txt: the first 20,000 characters of tiny-shakespeare (about 6,000 tokens), enough for tiny runs."""
    path = folder / "small.txt"
    path.write_text(_course_file().read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    return path


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    return write_small_corpus(tmp_path)


def tiny_args(input_file: Path, out_dir: Path, *extra: str) -> list[str]:
    """Flags of a small, fast, seeded CPU run of the tiny model, in fp32 (``--amp auto`` would pick bf16 on a CPU
    with bf16 matrix units and fp32 elsewhere: the losses these tests compare must not depend on the machine)."""
    return [
        "--input_file", str(input_file), "--out_dir", str(out_dir), "--model", "tiny", "--device", "cpu",
        "--amp", "off", "--steps", "6", "--batch_size", "2", "--seq_len", "32", "--grad_accum", "2", "--lr", "1e-3",
        "--log_every", "1", "--save_every", "0", "--sample_every", "0", "--max_new_tokens", "8", "--seed", "7",
        *extra,
    ]  # fmt: skip


def run_module(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would, capturing stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def _record_the_machine(record_testsuite_property) -> None:
    """The machine the tests ran on, in pytest's JUnit XML (``make test JUNIT=1``), where the README reads it."""
    import torch

    from nanogpt_lib.device import device_name

    record_testsuite_property("device", device_name(torch.device("cpu")))
