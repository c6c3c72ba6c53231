"""Train on a big CUDA GPU as a smaller or older card would: its memory capped, its compute capability reported in
place of the real one, so that the plan (precision, compilation, micro-batch) decides as it would there.

    python scripts/emulate_card.py --memory_gib 8 -- --config params/gpu-124m.yaml --steps 200 --out_dir out/as-8gb
    python scripts/emulate_card.py --capability 7.5 --memory_gib 15 -- --config params/gpu-124m.yaml ...

The cap is PyTorch's own (``torch.cuda.set_per_process_memory_fraction``): an allocation beyond it raises the
out-of-memory error a smaller card raises. The card still computes as itself: only what the run decides is
emulated, not the speed of the card.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from nanogpt_lib import device, plan, train
from nanogpt_lib.errors import UserError, run_cli


def capability(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a compute capability such as 7.5, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(
        prog="python scripts/emulate_card.py",
        description="Run python -m nanogpt_lib.train (the flags after --) as a card with less memory or an older "
        "compute capability would.",
    )
    parser.add_argument("--memory_gib", type=float, help="the GPU memory this process may use, in GiB")
    parser.add_argument("--capability", type=capability, help="the compute capability to report, e.g. 7.5")
    args = parser.parse_args(argv[:split])
    if not torch.cuda.is_available():
        raise UserError("emulating a card needs a CUDA GPU to run on")
    total = torch.cuda.get_device_properties(0).total_memory
    if args.memory_gib:
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_gib * 2**30 / total))
    if args.capability:
        real = device.probe

        def as_older(dev: torch.device) -> device.Machine:
            machine = real(dev)
            name = f"{machine.name} as a compute capability {args.capability[0]}.{args.capability[1]} card"
            return dataclasses.replace(machine, name=name, capability=args.capability)

        plan.probe = as_older  # what the plan decides from
    return train.main(argv[split + 1 :])


if __name__ == "__main__":
    sys.exit(run_cli(main))
