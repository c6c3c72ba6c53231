"""The full-corpus loss: the model in eval mode over every window of the whole token stream.

``python -m nanogpt_lib.evaluate --checkpoint out/<run>/checkpoints/last.pt`` measures it for a saved model, at
phase 0 (the windows the training loop measures) and, with ``--phases``, with the window boundaries moved: a
model with learned absolute positions can memorise where in a window each token falls, and then its loss
depends on where the windows are cut.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import runlog
from .config import TrainConfig
from .data import eval_windows
from .device import AMP_CHOICES, DEVICE_CHOICES, autocast, device_name, pick_device, resolve_amp
from .distributed import Group
from .errors import UserError, run_cli
from .rundir import PHASES, RunDir, phases_for
from .sample import load_model
from .tokenizer import encode_file

SINGLE = Group()  # one process: nothing to reduce
STANDARD = "standard"  # --phases: the phases a run is measured at (rundir.phases_for its seq_len)


@torch.no_grad()
def corpus_loss(
    model: torch.nn.Module,
    tokens: np.ndarray,
    seq_len: int,
    batch_size: int,
    device: torch.device,
    amp: str,
    group: Group = SINGLE,
) -> float:
    """Mean cross-entropy over every token of ``tokens`` after the first, each predicted exactly once.

    The stream is cut into consecutive non-overlapping windows of ``seq_len`` (see ``data.eval_windows``),
    so each prediction sees between 0 and ``seq_len - 1`` tokens of context, as in training. Under torchrun
    (``group``) each process takes every n-th batch and the sums are added up over the processes.
    """
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    try:
        for i, (x, y) in enumerate(eval_windows(tokens, seq_len, batch_size)):
            if i % group.world_size != group.rank:
                continue
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, amp):
                logits, _ = model(x)
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").double()
            count += y.numel()
    finally:
        model.train(was_training)
    sums = group.sum(torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=device)]))
    return (sums[0] / sums[1]).item()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nanogpt_lib.evaluate",
        description="The full-corpus loss of a checkpoint (eval mode, every token predicted once), at one or more "
        "phases: at phase p the windows start at token p, and every token after it is predicted once.",
    )
    parser.add_argument("--checkpoint", required=True, help="path to best.pt or last.pt of a run")
    parser.add_argument(
        "--input_file",
        help=f"the text the run trained on (default: the run's, from run_config.json next to checkpoints/, "
        f"else {TrainConfig.input_file})",
    )
    parser.add_argument("--seq_len", type=int, help=f"window length (default: the run's, else {TrainConfig.seq_len})")
    parser.add_argument(
        "--phases",
        default="0",
        help=f"comma-separated phases, each in 0..seq_len-1, or '{STANDARD}': {','.join(map(str, PHASES))} (the "
        f"quarters of a window shorter than {max(PHASES) + 1} tokens), what notebook 04 measures at the target "
        "(default: 0)",
    )
    parser.add_argument(
        "--out",
        help="also write the table, with this command and the model's details above it, to this markdown file "
        "(e.g. <run>/phases.md, which the report shows beside the run; written once every phase is measured)",
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        help="windows per forward pass (default: the run's batch_size x grad_accum, as the loop)",
    )
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where to run (default: auto)")
    parser.add_argument(
        "--amp",
        choices=AMP_CHOICES,
        help="mixed precision, as --amp of training (default: the run's, else auto)",
    )
    return parser


def parse_phases(text: str, seq_len: int) -> list[int]:
    if text.strip() == STANDARD:
        return phases_for(seq_len)
    try:
        phases = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UserError(f"--phases must be comma-separated integers, got {text!r}") from None
    if not phases or not all(0 <= p < seq_len for p in phases):
        raise UserError(f"--phases must be integers in 0..{seq_len - 1} (--seq_len {seq_len}), got {text!r}")
    return phases


def run_options(checkpoint_path: str) -> dict:
    """The training options of the run a checkpoint belongs to (``<run>/checkpoints/*.pt``), or {}."""
    run_dir = RunDir.of_checkpoint(checkpoint_path)
    if run_dir is None:
        return {}
    try:
        config = run_dir.read_run_config()
    except UserError:  # an unreadable run_config.json: fall back to the defaults, as for a lone checkpoint
        return {}
    plan = {k: v for k, v in config.get("plan", {}).items() if k in ("batch_size", "grad_accum")}
    return {**(config.get("train_config") or {}), **plan}  # the micro-batch the run took (batch_size may be auto)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = run_options(args.checkpoint)
    if args.input_file is None:
        args.input_file = run.get("input_file", TrainConfig.input_file)
    if args.seq_len is None:
        args.seq_len = int(run.get("seq_len", TrainConfig.seq_len))
    if args.batch_size is None:
        args.batch_size = int(run.get("batch_size", TrainConfig.batch_size)) * int(run.get("grad_accum", 1))
    if args.amp is None:
        args.amp = run.get("amp", "auto")
    if args.seq_len <= 0 or args.batch_size <= 0:
        raise UserError("--seq_len and --batch_size must be positive integers")
    phases = parse_phases(args.phases, args.seq_len)
    tokens = encode_file(args.input_file)
    if len(tokens) <= max(phases) + args.seq_len:
        raise UserError(f"{args.input_file} has {len(tokens)} tokens: too few for --seq_len {args.seq_len}")
    device = pick_device(args.device)
    model = load_model(args.checkpoint, device)
    if args.seq_len > model.config.block_size:
        raise UserError(f"--seq_len {args.seq_len} is longer than the model's context of {model.config.block_size}")
    amp = resolve_amp(args.amp, device)
    about = (
        f"{args.checkpoint}: {model.num_params():,} parameters on {device_name(device)}, amp {amp}; {args.input_file}, "
        f"windows of {args.seq_len} tokens, {args.batch_size} per batch" + (" (the run's options)" if run else "")
    )
    print(about, file=sys.stderr)
    lines = ["| phase | tokens predicted | full-corpus loss | seconds |", "| ---: | ---: | ---: | ---: |"]
    print("\n".join(lines))
    for phase in phases:
        t0 = time.perf_counter()
        loss = corpus_loss(model, tokens[phase:], args.seq_len, args.batch_size, device, amp)
        lines.append(f"| {phase} | {len(tokens) - 1 - phase:,} | {loss:.6f} | {time.perf_counter() - t0:.1f} |")
        print(lines[-1], flush=True)
    if args.out:
        command = runlog.command_line("nanogpt_lib.evaluate", sys.argv[1:] if argv is None else argv)
        try:
            runlog.write_phase_table(Path(args.out), command, about, lines)
        except OSError as err:
            raise UserError(f"cannot write {args.out}: {err.strerror or err}") from None
    return 0


def measure_phases(out_dir: str | Path, seq_len: int, device: str = "auto") -> int:
    """The full-corpus loss of a run's last.pt at ``rundir.phases_for(seq_len)`` (0, 64, 128 and 192 for windows of
    256 tokens or more), printed and written to its phases.md, on ``device``."""
    run_dir, phases = RunDir(out_dir), ",".join(map(str, phases_for(seq_len)))
    argv = ["--checkpoint", str(run_dir.last), "--phases", phases, "--out", str(run_dir.phases), "--device", device]
    return main(argv)


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
