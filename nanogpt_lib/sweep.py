"""A planned hyper-parameter sweep: short runs that stop at the target or at a cap, one model for all trials.

    python -m nanogpt_lib.sweep --plan params/sweep_cpu.yaml --corpus_chars 32768 --token_cap 250000 \\
        --out results/sweep_cpu.md

The plan is a YAML (or JSON) file: ``base`` holds training options shared by every trial (``TrainConfig`` names),
``trials`` a list of named overrides. Each trial re-initialises the same model (compiled once with ``--compile``: a
new batch shape compiles once more, nothing else does), trains with a fresh optimizer and data order until the
full-corpus loss is at or below ``target_loss``, or until ``--token_cap`` tokens or ``--time_cap_s`` seconds of
training. After every trial the records (``--json``) and the table drawn from them are rewritten, so a sweep cut off
half-way still leaves its finished trials, and ``--resume`` runs only the others. ``--best`` writes the options of
the trial that reached the target in the fewest tokens with its loss half a window off the measured cut below
``MID_PHASE_FACTOR`` x the target (a model that learned the text, not only the measured windows) as a parameter file
for ``papermill -f`` and ``python -m nanogpt_lib.train --config``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from . import runlog, stop_rules
from .atomic import atomic_write
from .config import AUTO, TrainConfig, load_options
from .device import DEVICE_CHOICES, configure_backends, device_name, pick_device, resolve_amp, synchronize
from .errors import UserError, run_cli
from .evaluate import corpus_loss
from .loop_state import LoopState
from .model import GPT, model_config
from .session import Session
from .tokenizer import encode_file, get_tokenizer, read_text

COLUMNS = (
    "trial", "tokens/step", "seq_len", "windows", "optimizer", "lr", "warmup", "schedule", "weight decay", "steps",
    "tokens", "passes", "train s", "step-loss crossing (step, tokens, s)",
    "full-corpus crossing (step, tokens, s, loss)", "full-corpus loss at the end", "loss at phase seq_len/2",
    "result",
)  # fmt: skip
Done = tuple[dict[str, Any], dict[str, Any]]  # a trial of the plan and its record
MID_PHASE_FACTOR = 2.0  # --best: the loss at phase seq_len/2 when a trial crossed stays below this x the target
MODEL_OPTIONS = ("model", "dropout")  # one model serves every trial: these may only be set in `base`


def load_plan(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    plan = load_options(path)
    base, trials = plan.get("base", {}), plan.get("trials")
    if not isinstance(base, dict) or not isinstance(trials, list) or not trials:
        raise UserError(f"{path}: a plan needs a 'base' mapping and a non-empty 'trials' list")
    names = [t.get("name") for t in trials]
    if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
        raise UserError(f"{path}: every trial needs a unique 'name'")
    for trial in trials:
        bad = [k for k in MODEL_OPTIONS if k in trial]
        if bad:
            raise UserError(f"{path}: trial {trial['name']!r} sets {', '.join(bad)}; set them in 'base' (one model)")
        cfg = TrainConfig.from_dict(trial_options(base, trial))
        cfg.validate()
        if cfg.batch_size == AUTO:
            raise UserError(
                f"{path}: trial {trial['name']!r}: a sweep trains one fixed shape; give batch_size a number"
            )
    return base, trials


def run_trial(
    model: GPT,
    runner: torch.nn.Module,
    tokens,
    cfg: TrainConfig,
    device: torch.device,
    amp: str,
    token_cap: int,
    time_cap_s: float,
) -> dict[str, Any]:
    """Train ``model`` from a fresh initialisation until the stop decision of the training loop ends the trial
    (stop_rules.decide: the full-corpus loss at the target, a diverged loss, --steps, the token or time cap)."""
    torch.manual_seed(cfg.seed)
    model.reset_parameters()
    model.train()
    cfg = dataclasses.replace(cfg, stop_on="corpus")  # a trial reaches the target by the full-corpus loss only
    session = Session.of_model(cfg, model, runner, tokens, device, amp)
    state = LoopState.fresh(cfg.log_every)
    timers, batches, stopping = state.timers, session.batches, cfg.stopping
    row: dict[str, Any] = {"step_cross": None, "corpus_cross": None}

    def measure(at: np.ndarray) -> float:
        return corpus_loss(model, at, cfg.seq_len, cfg.batch_size * cfg.grad_accum, device, amp)

    while True:
        state.step += 1
        synchronize(device)
        with timers.phase("warmup_s" if state.step == 1 else "train_s"):  # the first step may compile
            loss = session.step(state.step)[0].item()
        state.record(loss, cfg.target_loss)
        if state.target_step == state.step:
            row["step_cross"] = (state.step, batches.tokens_seen, timers["train_s"])
        corpus = None
        if stop_rules.corpus_pass_reason(stopping, state):  # when the training loop would measure it
            with timers.phase("eval_s"):
                corpus = measure(tokens)
            state.record_corpus_loss(corpus)
        seen = stop_rules.Seen(loss, corpus, batches.tokens_seen, token_cap, time_cap_s)
        stop = stop_rules.decide(stopping, state, seen)
        if stop is not None:
            break
    if stop.status == "target_reached":
        row["corpus_cross"] = (state.step, batches.tokens_seen, timers["train_s"], corpus)
    result = "target reached" if stop.status == "target_reached" else stop.message
    row.update(
        steps=state.step,
        tokens=batches.tokens_seen,
        train_s=timers["train_s"],
        warmup_s=timers["warmup_s"],
        result=result,
        passes=batches.tokens_seen / len(tokens),
    )
    with timers.phase("eval_s"):
        # where a trial stopped short of the target: comparable across trials of equal tokens
        row["final_loss"] = corpus if row["corpus_cross"] else measure(tokens)
        # the same text cut half a window later: whether the model learned the text or the measured windows
        row["mid_phase_loss"] = measure(tokens[cfg.seq_len // 2 :])
    row["eval_s"] = timers["eval_s"]
    return row


def _fmt_row(name: str, cfg: TrainConfig, row: dict[str, Any]) -> str:
    step_cross = "–" if row["step_cross"] is None else "{}, {:,}, {:.1f}".format(*row["step_cross"])
    corpus = "–" if row["corpus_cross"] is None else "{}, {:,}, {:.1f}, {:.4f}".format(*row["corpus_cross"])
    final = "–" if row.get("final_loss") is None else f"{row['final_loss']:.4f}"
    mid = "–" if row.get("mid_phase_loss") is None else f"{row['mid_phase_loss']:.4f}"
    passes = "–" if row.get("passes") is None else f"{row['passes']:.1f}"
    cells = (
        name, f"{cfg.step_tokens:,}", cfg.seq_len, window_label(cfg), optimizer_label(cfg), f"{cfg.lr:g}",
        cfg.warmup_steps, schedule_label(cfg), f"{cfg.weight_decay:g}", row["steps"], f"{row['tokens']:,}", passes,
        f"{row['train_s']:.1f}", step_cross, corpus, final, mid, row["result"],
    )  # fmt: skip
    return "| " + " | ".join(str(c) for c in cells) + " |"


def window_label(cfg: TrainConfig) -> str:
    if cfg.sampling == "random":
        return "random offsets"
    aligned = f", phase 0 after {cfg.aligned_after_passes} passes" if cfg.aligned_after_passes else ""
    return f"passes, {cfg.window_order}{aligned}"


def optimizer_label(cfg: TrainConfig) -> str:
    return f"muon {cfg.muon_lr:g} + adamw" if cfg.optimizer == "muon" else "adamw"


def schedule_label(cfg: TrainConfig) -> str:
    end = cfg.decay_steps or cfg.steps
    if cfg.lr_schedule == "cosine":
        return f"cosine to {cfg.min_lr:g} at {end}"
    if cfg.lr_schedule == "wsd":
        return f"wsd: stable, then down to {cfg.min_lr:g} over the last {cfg.cooldown_frac:g} (to step {end})"
    return cfg.lr_schedule


def write_table(path: Path, header: list[str], rows: list[str]) -> None:
    text = "\n".join([*header, "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS), *rows]) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def read_json_records(path: Path) -> list[dict[str, Any]]:
    """The trials of an earlier sweep's --json file ([] when there is none or it cannot be read)."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [r for r in records if isinstance(r, dict) and "trial" in r] if isinstance(records, list) else []


def write_best(path: Path, options: dict[str, Any], row: dict[str, Any], name: str) -> None:
    step, tokens, seconds, loss = row["corpus_cross"]
    comment = (
        f"# Recipe from sweep trial {name!r}: full-corpus loss {loss:.4f} after {step} steps, {tokens:,} tokens,\n"
        f"# {seconds:.1f} s of training. Use: papermill ... -f THIS_FILE, or python -m nanogpt_lib.train --config "
        f"THIS_FILE\n"
    )
    text = comment + yaml.safe_dump(options, sort_keys=False)
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def corpus_slice(path: str, chars: int) -> tuple[np.ndarray, str]:
    """The token ids of the first ``chars`` characters of a text file, cut at the last line end, and a label."""
    if chars <= 0:
        raise UserError(f"--corpus_chars must be a positive integer, got {chars}")
    text = read_text(path)[:chars]
    text = text[: text.rfind("\n") + 1] or text
    ids = np.asarray(get_tokenizer().encode_ordinary(text), dtype=np.uint16)
    return ids, f"the first {len(text):,} characters of {path} ({len(ids):,} tokens)"


def better(crossing, mid_loss: float | None, target: float, best: tuple[int, str] | None) -> bool:
    """Whether a trial crossed in fewer tokens than ``best`` (tokens, name) and knows the text at other cuts too."""
    if crossing is None or mid_loss is None or not mid_loss < MID_PHASE_FACTOR * target:
        return False
    return best is None or crossing[1] < best[0]


def consider(
    args: argparse.Namespace, best: tuple[int, str] | None, name: str, options: dict[str, Any], record: dict[str, Any]
) -> tuple[int, str] | None:
    """The best trial so far (tokens, name) once trial ``name`` is counted; with ``--best`` a new best is written at
    once, so that a sweep cut off later still leaves its best recipe so far."""
    target = TrainConfig.from_dict(options).target_loss
    if not better(record["corpus_cross"], record.get("mid_phase_loss"), target, best):
        return best
    if args.best:
        write_best(Path(args.best), {**options, "stop_on": "corpus"}, record, name)
        print(f"best so far: trial {name!r} -> {args.best}", file=sys.stderr)
    return record["corpus_cross"][1], name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nanogpt_lib.sweep",
        description="Run the trials of a plan file, each until the full-corpus loss reaches the target or a cap; "
        "rewrite the results table after every trial.",
    )
    p.add_argument("--plan", required=True, help="YAML/JSON plan: 'base' options and a list of named 'trials'")
    p.add_argument("--out", default="results/sweep.md", help="markdown table to (re)write (default: results/sweep.md)")
    p.add_argument(
        "--best",
        help=f"write the options of the trial that crossed in the fewest tokens with its loss at phase seq_len/2 "
        f"below {MID_PHASE_FACTOR:g} x the target here (YAML parameter file)",
    )
    p.add_argument(
        "--json",
        help="the sweep's records: every trial as JSON (options, corpus, caps, crossings, losses at the end), from "
        "which the table is drawn and --resume continues (default: --out with the suffix .json)",
    )
    p.add_argument("--token_cap", type=int, default=8_000_000, help="stop a trial after this many tokens (default: 8M)")
    p.add_argument("--time_cap_s", type=float, default=60.0, help="stop a trial after this much training (default: 60)")
    p.add_argument(
        "--corpus_chars",
        type=int,
        help="train and evaluate on the first N characters of input_file only (cut at a line end): a slice that the "
        "model memorises in minutes, to compare recipes quickly",
    )
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="device (default: auto)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model once for all trials")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the trials already in the --json records with the options the plan gives them now (a sweep that "
        "was stopped, or a plan that gained trials) and run only the others",
    )
    return p


def out_of_memory_row(device: torch.device) -> dict[str, Any]:
    """The row of a trial whose batch did not fit the card (its memory freed for the next trial)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "steps": 0,
        "tokens": 0,
        "train_s": 0.0,
        "step_cross": None,
        "corpus_cross": None,
        "result": "out of memory",
    }


def sweep_corpus(input_file: str, corpus_chars: int | None) -> tuple[np.ndarray, str]:
    """The tokens the trials train on, and how the table names them: the whole file, or its first characters."""
    if corpus_chars is None:
        return encode_file(input_file), input_file
    return corpus_slice(input_file, corpus_chars)


def table_header(
    args: argparse.Namespace, argv: list[str], device: str, first: TrainConfig, n_params: int, amp: str, corpus: str
) -> list[str]:
    """The lines above the table: the command, the model, and what stops each trial."""
    return [
        f"# Sweep on {device}",
        "",
        f"Command: `{runlog.command_line('nanogpt_lib.sweep', argv)}`",
        "",
        f"- plan `{args.plan}`; model {first.model} ({n_params:,} parameters); amp {amp}; "
        f"compile {args.compile}; torch {torch.__version__}",
        f"- each trial: fresh initialisation and optimizer, stops when the full-corpus loss (every token of "
        f"{corpus} once, eval mode) is ≤ {first.target_loss}, or at {args.token_cap:,} tokens or "
        f"{args.time_cap_s:g} s of training",
        "- seconds are training time (device synchronised), without each trial's first step (compilation of a new "
        "shape) and without the full-corpus passes; crossings give (step, tokens, seconds[, loss])",
        "",
    ]


def kept_records(
    args: argparse.Namespace,
    out: Path,
    json_path: Path,
    caps_line: str,
    trials: list[dict[str, Any]],
    base: dict[str, Any],
    corpus: str,
) -> dict[str, dict[str, Any]]:
    """With ``--resume``: the records of ``json_path`` for trials of the plan that already ran with the settings the
    plan gives them now, on this corpus and with these caps (a trial whose settings changed runs again).

    Records from before they named their corpus and caps count when the table beside them names this command's
    (``caps_line``, the line of its header that says what stops each trial)."""
    if not args.resume or not (out.is_file() or json_path.is_file()):
        return {}
    records = read_json_records(json_path)
    if not records:
        raise UserError(
            f"--resume needs the sweep's records, and {json_path} is missing, unreadable or empty; pass --json with "
            f"the file the sweep wrote, or drop --resume to run every trial again"
        )
    conditions = {"corpus": corpus, "token_cap": args.token_cap, "time_cap_s": args.time_cap_s}
    same_table = out.is_file() and caps_line in out.read_text(encoding="utf-8").splitlines()
    if not all({k: r.get(k) for k in conditions} == conditions if "corpus" in r else same_table for r in records):
        raise UserError(
            f"{json_path} holds trials run on another corpus or with other caps than this command's; drop --resume to "
            f"run them all again, or write to another --out"
        )
    wanted = {t["name"]: settings(trial_options(base, t)) for t in trials}
    return {r["trial"]: r for r in records if r["trial"] in wanted and wanted[r["trial"]] == settings(r.get("options"))}


def write_records(out: Path, json_path: Path, header: list[str], base: dict[str, Any], done: list[Done]) -> list[str]:
    """Rewrite the records (JSON) and the table drawn from them, after every trial; the table's rows."""
    rows = [_fmt_row(t["name"], TrainConfig.from_dict(trial_options(base, t)), record) for t, record in done]
    write_table(out, header, rows)
    runlog.write_json(json_path, [record for _, record in done])
    return rows


def later_kept(trials: list[dict[str, Any]], kept: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The trials among ``trials`` (those of the plan not reached yet) whose records ``--resume`` keeps."""
    return [t for t in trials if t["name"] in kept]


def settings(options: Any) -> dict[str, Any] | None:
    """What a trial trains with: its options with every default filled in (None when they are no valid options), so
    that an option moved to the plan's base, or a default spelt out, is the same trial."""
    try:
        return TrainConfig.from_dict(options).to_dict()
    except (UserError, TypeError, AttributeError):
        return None


def trial_options(base: dict[str, Any], trial: dict[str, Any]) -> dict[str, Any]:
    """A trial's training options: the plan's base, with the trial's own on top."""
    return {**base, **{k: v for k, v in trial.items() if k != "name"}}


def make_parents(*paths: Path) -> None:
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {err.filename}: {err.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.token_cap <= 0 or args.time_cap_s <= 0:
        raise UserError("--token_cap and --time_cap_s must be positive")
    base, trials = load_plan(args.plan)
    first = TrainConfig.from_dict(base)
    device = pick_device(args.device)
    amp = resolve_amp(first.amp, device)
    configure_backends(device)
    tokens, corpus = sweep_corpus(first.input_file, args.corpus_chars)
    torch.manual_seed(first.seed)
    model = GPT(model_config(first.model, first.dropout)).to(device)
    runner = torch.compile(model) if args.compile else model
    out = Path(args.out)
    json_path = Path(args.json) if args.json else out.with_suffix(".json")
    if json_path.resolve() == out.resolve():
        raise UserError(f"--json and --out are the same file ({out}); give the records a name of their own")
    header = table_header(args, argv, device_name(device), first, model.num_params(), amp, corpus)
    make_parents(out, json_path)
    caps_line = next(line for line in header if line.startswith("- each trial:"))
    kept = kept_records(args, out, json_path, caps_line, trials, base, corpus)
    caps = {"token_cap": args.token_cap, "time_cap_s": args.time_cap_s}  # each record names its corpus and caps
    done: list[Done] = []  # in the plan's order
    best = None
    for trial in later_kept(trials, kept):  # the kept trials compete from the start, a sweep cut off early or not
        best = consider(args, best, trial["name"], trial_options(base, trial), kept[trial["name"]])
    for i, trial in enumerate(trials):
        name, options = trial["name"], trial_options(base, trial)
        cfg = TrainConfig.from_dict(options)
        if name in kept:  # finished by an earlier sweep with these options, corpus and caps
            record = kept[name]
            print(f"trial {name!r}: kept from {json_path}", flush=True)
        else:
            try:
                row = run_trial(model, runner, tokens, cfg, device, amp, args.token_cap, args.time_cap_s)
            except torch.OutOfMemoryError:  # one trial's batch too large for this card: the others still run
                row = out_of_memory_row(device)
            except KeyboardInterrupt:
                finished = len(done) + len(later_kept(trials[i + 1 :], kept))
                raise KeyboardInterrupt(
                    f"trial {name!r} was cut off; the {finished} finished trials stay in {json_path} and {out}, "
                    "and the same command with --resume runs the rest"
                ) from None
            record = {"trial": name, "options": options, "corpus": corpus, **caps, **row}
        done.append((trial, record))
        # kept trials further down the plan stay in both files, so a resumed sweep cut off again loses none of them
        later = [(t, kept[t["name"]]) for t in later_kept(trials[i + 1 :], kept)]
        rows = write_records(out, json_path, header, base, done + later)
        print(rows[len(done) - 1], flush=True)
        if name not in kept:
            best = consider(args, best, name, options, record)
    if best is None:
        print(
            f"no trial reached the target with its loss at phase seq_len/2 below {MID_PHASE_FACTOR:g} x the target"
            + (": no recipe written" if args.best else ""),
            file=sys.stderr,
        )
    return 0


def cli() -> None:
    # a plain `kill` stops a sweep as Ctrl-C does, naming the finished trials: the way to stop one left running in the
    # background, where the shell has it ignore Ctrl-C
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
