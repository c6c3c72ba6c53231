"""The proven recipes: which parameter file trains to the target on which kind of device, and what to expect of it.

    python -m nanogpt_lib.recipes                 # the recipe for this machine, what this machine makes of it (device,
                                                  # precision, compilation, micro-batch, each with its reason), what
                                                  # its committed run needed, and the time that takes here (a few
                                                  # timed steps of the model)
    python -m nanogpt_lib.recipes --papermill auto   # "-f params/...yaml" for papermill by hand (nothing: reference)

A recipe is a parameter file in ``params/`` and the folder in ``results/`` with the evidence of its real run. The
course's reference recipe is the default of every option (``TrainConfig``): no file, and no committed run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import runlog
from .config import TrainConfig, load_options
from .device import DEVICE_CHOICES, autocast, configure_backends, device_name, pick_device, synchronize
from .errors import UserError, run_cli
from .model import GPT, model_config
from .plan import Plan, make_plan
from .rundir import evidence_name

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Recipe:
    name: str
    params: str  # the parameter file, relative to the project folder
    evidence: str  # the results folder of its real run
    devices: tuple[str, ...]  # the device types it is meant for


# The first recipe for a device type is the one `auto` picks: the proven one (its run reached the target).
RECIPES = (
    Recipe("cpu", "params/cpu-124m.yaml", "results/cpu-2core-bf16", ("cpu", "mps")),
    Recipe("gpu", "params/gpu-124m.yaml", "results/h100-bf16", ("cuda",)),
    Recipe("cpu-wsd", "params/cpu-124m-wsd.yaml", "results/cpu-2core-wsd", ("cpu", "mps")),
    Recipe(
        "cpu-wsd-random", "params/cpu-124m-wsd-random.yaml", "results/superseded/cpu-2core-wsd-random", ("cpu", "mps")
    ),
)
CHOICES = ("auto", "reference", *(r.name for r in RECIPES))
# options that say where and how a run is kept, not what it trains: they do not make another recipe
NOT_RECIPE = ("input_file", "out_dir", "resume", "overwrite", "device", "log_every", "save_every", "sample_every",
              "extra_prompts", "prompt", "num_prompts", "max_new_tokens", "top_k", "temperature")  # fmt: skip


def for_device(device_type: str) -> Recipe:
    """The proven recipe for a device type (cuda, mps or cpu)."""
    return next(r for r in RECIPES if device_type in r.devices)


def choose(choice: str, device_type: str) -> Recipe | None:
    """The recipe ``choice`` names (``auto``: the one for ``device_type``; ``reference``: None, the defaults)."""
    if choice not in CHOICES:
        raise UserError(f"unknown recipe {choice!r}; choose one of: {', '.join(CHOICES)}")
    if choice == "reference":
        return None
    return for_device(device_type) if choice == "auto" else next(r for r in RECIPES if r.name == choice)


def options_of(recipe: Recipe) -> dict[str, Any]:
    return TrainConfig.from_dict(load_options(ROOT / recipe.params)).to_dict()


def matching(cfg: TrainConfig) -> Recipe | None:
    """The recipe whose training options ``cfg`` has (where and how it keeps the run aside), if any."""
    wanted = {k: v for k, v in cfg.to_dict().items() if k not in NOT_RECIPE}
    for recipe in RECIPES:
        if {k: v for k, v in options_of(recipe).items() if k not in NOT_RECIPE} == wanted:
            return recipe
    return None


def committed_summary(recipe: Recipe) -> dict[str, Any] | None:
    """The summary.json of the recipe's committed run (None when there is none yet)."""
    try:
        return runlog.read_json(ROOT / recipe.evidence / evidence_name("summary"))
    except (OSError, ValueError):
        return None


def committed_last_row(recipe: Recipe) -> dict[str, Any]:
    """The last row of the committed run's train_metrics.csv ({} when there is none): where a run that went on past
    its summary.json stands."""
    try:
        rows = runlog.read_metrics(ROOT / recipe.evidence / evidence_name("metrics"))
    except (OSError, ValueError):
        return {}
    return rows[-1] if rows else {}


def committed_run(recipe: Recipe, summary: dict[str, Any] | None) -> str:
    """What the recipe's committed run needed, or where it stands (from its log when that went on past its summary)."""
    if summary is None:
        return f"no committed run of this recipe yet ({recipe.evidence}/summary.json is missing)"
    where = f"{recipe.evidence}: {summary.get('device', '?')}, amp {summary.get('amp', '?')}"
    if summary.get("status") != "target_reached":
        steps, tokens, _ = runlog.progress(summary, committed_last_row(recipe))
        return (
            f"its committed run has not reached the target yet: {tokens or 0:,.0f} tokens in {steps:,} steps so far "
            f"({where})"
        )
    return (
        f"its committed run reached the target after {summary['tokens_seen']:,} tokens, {summary['steps']:,} steps "
        f"({where})"
    )


def measure_speed(cfg: TrainConfig, plan: Plan, steps: int = 2, untimed: int = 2) -> tuple[float, str]:
    """Tokens per second of forward and backward at the plan's micro-batch on this machine (a throwaway model, eager,
    ``untimed`` micro-batches first), and where it ran, under the process settings that training uses
    (configure_backends: on a CPU the allocator's, worth much of a step's time). The random state that training will
    use is left as it was."""
    device, amp, batch_size = plan.machine.device, plan.amp.value, plan.micro_batch.value[0]
    configure_backends(device)
    with torch.random.fork_rng(devices=[]):
        model = GPT(model_config(cfg.model, cfg.dropout)).to(device)
        x = torch.randint(model.config.vocab_size, (batch_size, cfg.seq_len), device=device)
        seconds = 0.0
        for i in range(untimed + steps):
            synchronize(device)
            t0 = time.perf_counter()
            with autocast(device, amp):
                _, loss = model(x, x)
            loss.backward()
            synchronize(device)
            seconds += (time.perf_counter() - t0) if i >= untimed else 0.0
    return steps * batch_size * cfg.seq_len / seconds, f"{device_name(device)}, amp {amp}"


def expectation(cfg: TrainConfig, measure: bool = True, plan: Plan | None = None) -> str:
    """What to expect of a run with these options: its recipe, what that recipe needed, and (``measure``) the time
    that takes on this machine, with the micro-batch of ``plan`` (made here when not given)."""
    recipe = matching(cfg)
    summary = committed_summary(recipe) if recipe else None
    if recipe is None:
        head = "Recipe: none of the proven ones (the course's reference recipe, or options of your own)"
    else:
        head = f"Recipe: {recipe.name} ({recipe.params}); {committed_run(recipe, summary)}"
    if not measure:
        return head
    cfg.validate()
    plan = plan or make_plan(cfg, pick_device(cfg.device))
    tok_s, where = measure_speed(cfg, plan)
    eager = ", not compiled: a compiled run is faster" if plan.compile.value else ""
    speed = (
        f"Measured here: {tok_s:,.0f} tokens/s of forward and backward ({where}, {plan.micro_batch.value[0]} x "
        f"{cfg.seq_len}{eager})"
    )
    if not summary or summary.get("status") != "target_reached":
        return f"{head}\n{speed}; no committed run at the target to estimate the time from."
    needed = summary["tokens_seen"]
    return f"{head}\n{speed}: its {needed:,} tokens take about {runlog.duration(needed / tok_s)} of training here."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nanogpt_lib.recipes",
        description="The proven recipe for this machine (or the one named): the device, precision, compilation and "
        "micro-batch it gets here, each with its reason, what its committed run needed and the time it takes here.",
    )
    parser.add_argument("recipe", nargs="?", default="auto", help=f"one of {', '.join(CHOICES)} (default: auto)")
    parser.add_argument(
        "--papermill",
        action="store_true",
        help="only print papermill's option for the recipe's parameter file (nothing for the reference recipe)",
    )
    parser.add_argument(
        "--device", default="auto", choices=DEVICE_CHOICES, help="the device to choose for (default: this machine's)"
    )
    parser.add_argument("--no_measure", action="store_true", help="the plan only: time no steps of the model")
    args = parser.parse_args(argv)
    recipe = choose(args.recipe, pick_device(args.device).type)
    if args.papermill:
        print(f"-f {recipe.params}" if recipe else "")
        return 0
    cfg = TrainConfig.from_dict(load_options(ROOT / recipe.params)) if recipe else TrainConfig()
    cfg = dataclasses.replace(cfg, device=args.device)
    cfg.validate()
    plan = make_plan(cfg, pick_device(cfg.device))
    print("\n".join(plan.lines(cfg.seq_len)))
    print(expectation(cfg, measure=not args.no_measure, plan=plan))
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
