"""Text generation from a trained model, and the ``python -m nanogpt_lib.sample`` command.

The command prints only the generated text on stdout (messages go to stderr), so its output can be
piped or redirected; the same seed gives the same text.
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import checkpoint
from .config import Generation, TrainConfig, check_temperature
from .device import DEVICE_CHOICES, autocast, pick_device, resolve_amp
from .errors import UserError, run_cli
from .model import GPT
from .tokenizer import decode, encode


def generate_text(
    model: GPT,
    prompt: str,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    seed: int,
    num_samples: int = 1,
    amp: str = "off",
) -> list[str]:
    """``num_samples`` continuations of ``prompt`` (each includes the prompt), reproducible for a seed.

    Uses its own random generator, so sampling during training never disturbs the training RNG.
    """
    check_temperature(temperature)
    ids = encode(prompt)
    if not ids:
        raise UserError("the prompt is empty; give at least one character")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        with autocast(device, amp):
            out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
    finally:
        model.train(was_training)
    return [decode(row) for row in out.tolist()]


def generate_samples(model: GPT, generation: Generation, step: int, amp: str = "off") -> list[tuple[str, list[str]]]:
    """The samples of a run's sampling event at ``step``: for each prompt, ``num_prompts`` continuations, seeded with
    ``seed + step`` (so every event draws afresh, and a resumed run draws what the uninterrupted one did)."""
    g = generation
    return [
        (
            prompt,
            generate_text(model, prompt, g.max_new_tokens, g.temperature, g.top_k, g.seed + step, g.num_prompts, amp),
        )
        for prompt in g.prompts
    ]


def load_model(path: str, device: torch.device) -> GPT:
    """A model for inference from ``best.pt`` or ``last.pt``."""
    ckpt = checkpoint.load(path, kind=checkpoint.KIND_WEIGHTS, map_location="cpu")
    model = GPT(checkpoint.model_config_of(ckpt, path))
    checkpoint.load_weights(model, ckpt, path)
    return model.to(device).eval()


def build_parser() -> argparse.ArgumentParser:
    """The sampling flags, with the defaults that training uses for its samples (``TrainConfig``)."""
    parser = argparse.ArgumentParser(
        prog="python -m nanogpt_lib.sample",
        description="Generate text from a trained checkpoint. Only the generated text goes to stdout.",
    )
    parser.add_argument("--checkpoint", required=True, help="path to best.pt or last.pt of a run")
    parser.add_argument(
        "--prompt",
        default=TrainConfig.prompt.replace("\n", "\\n"),  # as typed on a command line
        help="text to continue; \\n stands for a newline (default: %(default)s)",
    )
    parser.add_argument(
        "--max_new_tokens",
        type=int,
        default=TrainConfig.max_new_tokens,
        help="tokens to generate (default: %(default)s)",
    )
    parser.add_argument(
        "--top_k",
        type=int,
        default=TrainConfig.top_k,
        help="sample from the k most likely tokens; 0 disables (default: %(default)s)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=TrainConfig.temperature,
        help="> 0; lower is more conservative (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=TrainConfig.seed,
        help="random seed: the same seed gives the same text (default: %(default)s)",
    )
    parser.add_argument("--num_samples", type=int, default=1, help="number of continuations (default: 1)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where to run (default: auto)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_new_tokens <= 0 or args.num_samples <= 0:
        raise UserError("--max_new_tokens and --num_samples must be positive integers")
    if args.top_k < 0:
        raise UserError(f"--top_k must be >= 0, got {args.top_k}")
    check_temperature(args.temperature)
    device = pick_device(args.device)
    model = load_model(args.checkpoint, device)
    print(f"loaded {args.checkpoint} ({model.num_params():,} parameters) on {device}", file=sys.stderr)
    texts = generate_text(
        model,
        args.prompt.replace("\\n", "\n"),
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.seed,
        num_samples=args.num_samples,
        amp=resolve_amp("auto", device),
    )
    sys.stdout.write("\n\n".join(texts) + "\n")
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
