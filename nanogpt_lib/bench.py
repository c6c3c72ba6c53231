"""Training-step benchmark: our GPT against ``transformers.GPT2LMHeadModel``, in one process, alternating.

    python -m nanogpt_lib.bench --device cpu --model tiny --batch_size 4 --seq_len 128 --repeats 7
    python -m nanogpt_lib.bench --compile --peer eager ...   # ours compiled against ours not compiled

With ``--peer eager`` the peer is a copy of our own model, never compiled: the ratio is what ``torch.compile`` gives.

Both models start from the same weights (copied with ``hf_compat.to_transformers``), train on the same
batches with the same optimizer (AdamW from ``optim.make_optimizers``, gradients clipped at norm 1.0 as in
training), dtype/autocast and compile setting.
Each model computes its loss its own way (ours inside ``GPT.forward``, transformers' with its
``loss_function`` on the same shifted targets). After warm-up the two run in turns, A B A B ..., and each
repeat times ``--steps`` optimizer steps with the device synchronised at every phase boundary. The table
reports medians over repeats; the last line is the ratio of our median tokens/s to the peer's.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import runlog
from .atomic import atomic_write
from .config import TrainConfig
from .device import (
    AMP_CHOICES,
    DEVICE_CHOICES,
    autocast,
    configure_backends,
    device_name,
    pick_device,
    resolve_amp,
    synchronize,
)
from .errors import UserError, run_cli
from .model import GPT, GPTConfig, model_config
from .model_stats import flops_per_token
from .optim import make_optimizers
from .step import clip_gradients
from .train import Trainer

# Dense (no sparsity) tensor-core peaks from NVIDIA's data sheets, in TFLOP/s: {name fragment: {dtype: peak}}.
# Matched against torch.cuda.get_device_name(); an unknown card gets no MFU rather than a borrowed figure.
PEAK_TFLOPS = {
    "H200": {"bf16": 989.4, "fp16": 989.4, "off": 494.7},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "off": 378.0},
    "H100": {"bf16": 989.4, "fp16": 989.4, "off": 494.7},  # SXM
    "A100": {"bf16": 312.0, "fp16": 312.0, "off": 156.0},
    "L4": {"bf16": 121.0, "fp16": 121.0, "off": 60.0},
    "T4": {"fp16": 65.0},
    "V100": {"fp16": 125.0},
}


GRAD_CLIP = TrainConfig.grad_clip  # the training default, applied to both models


def peak_tflops(name: str, amp: str) -> float | None:
    for fragment, peaks in PEAK_TFLOPS.items():  # ordered: "H100 PCIe" is tried before "H100"
        if fragment in name:
            return peaks.get(amp)
    return None


@dataclasses.dataclass
class Contender:
    name: str
    model: torch.nn.Module
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    times: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {"fwd": [], "bwd": [], "opt": []})
    step_seconds: list[float] = dataclasses.field(default_factory=list)
    losses: list[float] = dataclasses.field(default_factory=list)
    peak_bytes: int | None = None
    clip: Callable[[torch.nn.Module], object] = lambda model: None


def _ours(runner: torch.nn.Module) -> Callable:
    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return runner(x, y)[1]

    return loss_of


def _theirs(runner: torch.nn.Module, hf: torch.nn.Module) -> Callable:
    """transformers' own loss code (upcast, flatten, cross-entropy) on our already shifted targets."""

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = runner(input_ids=x).logits
        return hf.loss_function(logits, None, vocab_size=hf.config.vocab_size, shift_labels=y)

    return loss_of


def build(args: argparse.Namespace, device: torch.device) -> tuple[list[Contender], GPTConfig]:
    from .hf_compat import to_transformers

    shape = {k: getattr(args, k) for k in ("n_layer", "n_head", "n_embd") if getattr(args, k) is not None}
    config = dataclasses.replace(model_config(args.model), **shape)
    if args.seq_len > config.block_size:
        raise UserError(f"--seq_len {args.seq_len} is longer than the model's context of {config.block_size}")
    torch.manual_seed(args.seed)
    ours = GPT(config).to(device)
    if args.peer == "eager":
        theirs = GPT(config).to(device)
        theirs.load_state_dict(ours.state_dict())
    else:
        theirs = to_transformers(ours).to(device)
        theirs.config.use_cache = False
    opt_cfg = TrainConfig(lr=args.lr)
    contenders = []
    for name, model in (("ours", ours), (args.peer, theirs)):
        model.train()
        runner = torch.compile(model) if args.compile and name != "eager" else model
        loss_of = _theirs(runner, model) if name == "transformers" else _ours(runner)
        contender = Contender(name, runner, loss_of, make_optimizers(model, opt_cfg.optimization)[0])
        if name != "transformers":  # our training loop's clipping
            contender.clip = lambda m: clip_gradients(m, GRAD_CLIP, device)
        else:  # what transformers' Trainer does
            contender.clip = lambda m: torch.nn.utils.clip_grad_norm_(m.parameters(), GRAD_CLIP)
        contenders.append(contender)
    return contenders, config


def train_steps(c: Contender, batches: list, steps: int, device: torch.device, amp: str, record: bool) -> None:
    """``steps`` optimizer steps of ``len(batches)`` micro-batches each, timing forward, backward and optimizer."""
    for _ in range(steps):
        fwd = bwd = 0.0
        total = torch.zeros((), device=device)
        for x, y in batches:
            synchronize(device)
            t0 = time.perf_counter()
            with autocast(device, amp):
                loss = c.loss_of(x, y)
            synchronize(device)
            t1 = time.perf_counter()
            (loss / len(batches)).backward()
            synchronize(device)
            t2 = time.perf_counter()
            fwd, bwd = fwd + t1 - t0, bwd + t2 - t1
            total += loss.detach()
        t3 = time.perf_counter()
        c.clip(c.model)  # as each one's training loop does by default
        c.optimizer.step()
        c.optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        opt = time.perf_counter() - t3
        c.losses.append(total.item() / len(batches))
        if record:
            c.times["fwd"].append(fwd)
            c.times["bwd"].append(bwd)
            c.times["opt"].append(opt)
            c.step_seconds.append(fwd + bwd + opt)


def time_in_turns(
    contenders: list[Contender], batches: list, args: argparse.Namespace, device: torch.device, amp: str
) -> tuple[float, list[float]]:
    """Warm both up, then time ``args.repeats`` turns of ``args.steps`` steps each, in alternating order; with
    ``--loop``, the real loop's tokens/s after each turn. Returns the warm-up seconds and those loop figures."""
    t0 = time.perf_counter()
    for c in contenders:  # warm-up: allocation, kernel selection, compilation
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        train_steps(c, batches, args.warmup, device, amp, record=False)
    warmup_s = time.perf_counter() - t0
    loop_tok_s = []
    for repeat in range(args.repeats):
        order = contenders if repeat % 2 == 0 else contenders[::-1]  # A B, B A: neither always goes first
        for c in order:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            train_steps(c, batches, args.steps, device, amp, record=True)
            if device.type == "cuda":
                c.peak_bytes = max(c.peak_bytes or 0, torch.cuda.max_memory_allocated(device))
        if args.loop:
            loop_tok_s.append(loop_throughput(args, device))
    return warmup_s, loop_tok_s


def result_rows(
    contenders: list[Contender], tokens_per_step: int, flops: dict[str, float], peak: float | None
) -> tuple[list[str], dict[str, float]]:
    """A table row per contender (medians, spread, split, memory, MFU, first and last loss), and its tokens/s."""
    rows, medians = [], {}
    for c in contenders:
        step_s = statistics.median(c.step_seconds)
        tok_s = tokens_per_step / step_s
        medians[c.name] = tok_s
        mfu = f"{100 * tok_s * flops['total (GFLOP/token)'] * 1e9 / (peak * 1e12):.1f}%" if peak else "n/a"
        memory = f"{c.peak_bytes / 2**30:.2f} GiB" if c.peak_bytes is not None else "n/a (CUDA only)"
        split = " / ".join(f"{1000 * statistics.median(c.times[k]):.1f}" for k in ("fwd", "bwd", "opt"))
        spread = f"{1000 * min(c.step_seconds):.1f}–{1000 * max(c.step_seconds):.1f}"
        rows.append(
            f"| {c.name} | {tok_s:,.0f} | {1000 * step_s:.1f} ({spread}) | {split} | {memory} | {mfu} "
            f"| {c.losses[0]:.6f} | {c.losses[-1]:.6f} |"
        )
    return rows, medians


def run(args: argparse.Namespace) -> tuple[str, float]:
    device = pick_device(args.device)
    amp = resolve_amp(args.amp, device)
    backends = configure_backends(device, keep_freed=not args.default_allocator)  # as training does, for both
    contenders, config = build(args, device)
    gen = torch.Generator().manual_seed(args.seed)
    vocab = 50257
    batches = [
        tuple(torch.randint(0, vocab, (args.batch_size, args.seq_len), generator=gen).to(device) for _ in range(2))
        for _ in range(args.grad_accum)
    ]
    tokens_per_step = args.batch_size * args.seq_len * args.grad_accum

    warmup_s, loop_tok_s = time_in_turns(contenders, batches, args, device, amp)
    name = device_name(device)
    peak = peak_tflops(name, amp) if device.type == "cuda" else None
    flops = flops_per_token(config, args.seq_len)
    rows, medians = result_rows(contenders, tokens_per_step, flops, peak)
    ratio = medians["ours"] / medians[args.peer]
    if loop_tok_s:
        loop = statistics.median(loop_tok_s)
        rows.append(
            f"| ours, whole `Trainer` loop | {loop:,.0f} | {1000 * tokens_per_step / loop:.1f} "
            f"({1000 * tokens_per_step / max(loop_tok_s):.1f}–{1000 * tokens_per_step / min(loop_tok_s):.1f}) "
            f"| batches, clipping, logging included | | | | |"
        )
        rows.append(f"\nloop/bare step: {loop / medians['ours']:.2f}")
    import transformers

    peer = "transformers GPT-2" if args.peer == "transformers" else "itself not compiled"
    only = " (ours only)" if args.peer == "eager" else ""
    header = [
        f"# Training-step benchmark: nanogpt_lib vs {peer} on {name}",
        "",
        f"Command: `{args.command}`",
        "",
        f"- date {dt.datetime.now(dt.timezone.utc).date()}; python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}; {torch.get_num_threads()} CPU threads",
        f"- model {args.model}: n_layer {config.n_layer}, n_head {config.n_head}, n_embd {config.n_embd}, "
        f"vocab {config.vocab_size}",
        f"- batch {args.batch_size} x seq {args.seq_len} x accum {args.grad_accum} = {tokens_per_step:,} tokens/step; "
        f"amp {amp}; compile {args.compile}{only}; AdamW (fused={contenders[0].optimizer.defaults.get('fused')}), "
        f"gradient clipping at {GRAD_CLIP}; process settings for both (as in training): {backends}",
        f"- {args.warmup} warm-up steps each ({warmup_s:.1f} s in all), then {args.repeats} alternating repeats of "
        f"{args.steps} steps; medians over the {args.repeats * args.steps} timed steps",
        f"- MFU from {flops['total (GFLOP/token)']:.3f} GFLOP/token and the device's peak: "
        + (f"{peak} TFLOP/s ({amp})" if peak else "not in the table for this device, so no MFU"),
        "",
        "| model | tokens/s | ms/step (min–max) | fwd / bwd / opt ms | peak memory | MFU | loss step 1 | loss last |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    table = "\n".join(header + rows) + f"\n\nratio ours/{args.peer}: {ratio:.2f}\n"
    return table, ratio


def loop_throughput(args: argparse.Namespace, device: torch.device) -> float:
    """Tokens/s of the real training loop (Trainer on the course file) at the benchmark's configuration.

    A fresh run of ``--steps`` + 1 steps: the Trainer reports its first step as warm-up, apart.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            input_file=args.input_file, out_dir=tmp, model=args.model, steps=args.steps + 1,
            batch_size=args.batch_size, seq_len=args.seq_len, grad_accum=args.grad_accum, amp=args.amp,
            compile=args.compile, device=device.type, lr=args.lr, log_every=args.steps + 1,
            save_every=0, sample_every=0, max_new_tokens=1,
        )  # fmt: skip
        if any(getattr(args, k) is not None for k in ("n_layer", "n_head", "n_embd")):
            raise UserError("--loop runs a model preset: drop --n_layer/--n_head/--n_embd")
        summary = Trainer(cfg, command="nanogpt_lib.bench --loop").run()
    return summary["tok_per_s"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nanogpt_lib.bench",
        description="Time a training step of our GPT against transformers' GPT2LMHeadModel (same weights, "
        "same batches, same optimizer), alternating, and print a markdown table and their ratio.",
    )
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="device (default: auto)")
    p.add_argument("--model", default="tiny", choices=("tiny", "gpt2-124m"), help="model preset (default: tiny)")
    p.add_argument("--n_layer", type=int, help="override the preset's number of layers")
    p.add_argument("--n_head", type=int, help="override the preset's number of heads")
    p.add_argument("--n_embd", type=int, help="override the preset's width")
    p.add_argument("--batch_size", type=int, default=4, help="sequences per micro-batch (default: 4)")
    p.add_argument("--seq_len", type=int, default=128, help="tokens per sequence (default: 128)")
    p.add_argument("--grad_accum", type=int, default=1, help="micro-batches per step (default: 1)")
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES, help="mixed precision (default: auto)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models (with --peer eager: ours only)")
    p.add_argument(
        "--peer",
        default="transformers",
        choices=("transformers", "eager"),
        help="what ours is timed against: transformers' GPT2LMHeadModel, or (eager) our own model never compiled "
        "(default: transformers)",
    )
    p.add_argument("--repeats", type=int, default=7, help="alternating repeats per model (default: 7)")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps timed per repeat (default: 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first (default: 2)")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (default: 3e-4)")
    p.add_argument("--seed", type=int, default=1337, help="seed for weights and batches (default: 1337)")
    p.add_argument(
        "--default_allocator", action="store_true", help="leave glibc's allocator as it is (training tunes it)"
    )
    p.add_argument("--loop", action="store_true", help="in each repeat, also time the real training loop (Trainer)")
    p.add_argument("--input_file", default="data/input.txt", help="text for --loop (default: data/input.txt)")
    p.add_argument("--out", help="also write the table to this markdown file")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    for name in ("batch_size", "seq_len", "grad_accum", "repeats", "steps"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    if args.peer == "eager" and not args.compile:
        raise UserError("--peer eager times ours compiled against ours not compiled: add --compile")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UserError("the benchmark needs transformers: pip install -r requirements-dev.txt") from None
    args.command = runlog.command_line("nanogpt_lib.bench", argv)
    table, _ = run(args)
    print(table, end="")
    if args.out:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(out, lambda fh: fh.write(table.encode("utf-8")))
        except OSError as err:
            raise UserError(f"cannot write {out}: {err.strerror}") from None
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
