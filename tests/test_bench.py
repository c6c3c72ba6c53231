"""The benchmark runs on the tiny model and prints a well-formed table (its numbers are not checked here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from nanogpt_lib import bench
from nanogpt_lib.errors import EXIT_USER_ERROR, run_cli

pytest.importorskip("transformers")


def test_bench_prints_a_table_and_the_ratio(capsys, small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    argv = ["--device", "cpu", "--model", "tiny", "--amp", "off", "--batch_size", "1", "--seq_len", "16",
            "--repeats", "2", "--steps", "1", "--warmup", "1", "--loop", "--input_file", str(small_corpus),
            "--out", str(out)]  # fmt: skip
    assert run_cli(bench.main, argv) == 0
    printed = capsys.readouterr().out
    lines = printed.strip().splitlines()
    assert re.fullmatch(r"ratio ours/transformers: \d+\.\d\d", lines[-1])
    assert printed.startswith("# Training-step benchmark: nanogpt_lib vs transformers GPT-2 on CPU")
    assert "Command: `python -m nanogpt_lib.bench --device cpu" in printed
    rows = [line for line in lines if line.startswith("| ours") or line.startswith("| transformers")]
    assert len(rows) == 3 and all(line.count("|") == 9 for line in rows)
    ours_first, theirs_first = (float(line.split("|")[7]) for line in rows[:2])
    assert ours_first == pytest.approx(theirs_first, abs=1e-5)  # same weights, same batch: the same loss
    assert re.search(r"^loop/bare step: \d+\.\d\d$", printed, re.M)
    assert out.read_text() == printed


def test_bench_rejects_bad_sizes(capsys) -> None:
    assert run_cli(bench.main, ["--device", "cpu", "--repeats", "0"]) == EXIT_USER_ERROR
    assert "--repeats must be a positive integer" in capsys.readouterr().err


def test_bench_against_itself_not_compiled_needs_compile(capsys) -> None:
    assert run_cli(bench.main, ["--device", "cpu", "--peer", "eager"]) == EXIT_USER_ERROR
    assert "--peer eager times ours compiled against ours not compiled: add --compile" in capsys.readouterr().err


def test_bench_peer_eager_is_our_own_model_with_the_same_weights() -> None:
    args = bench.build_parser().parse_args(["--device", "cpu", "--peer", "eager", "--compile"])
    contenders, _ = bench.build(args, torch.device("cpu"))
    ours, peer = contenders
    assert peer.name == "eager" and type(peer.model) is type(ours.model._orig_mod)  # ours runs compiled, the peer not
    assert all(
        torch.equal(a, b) for a, b in zip(ours.model._orig_mod.parameters(), peer.model.parameters(), strict=True)
    )
