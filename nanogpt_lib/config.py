"""Configuration: every training option (``TrainConfig``); the model's own configuration lives beside the model
(``model.GPTConfig``, its presets in ``model.PRESETS``).

``TrainConfig`` is the single list of training options. The CLI flags, the notebooks' papermill
``parameters`` cell, ``run_config.json`` and the checkpoint are all derived from it, so an option is
declared exactly once: here, with its default and its one-line help.

The options a part of the library reads together form a group, which that part declares and takes instead of
loose arguments: ``cfg.windows`` (data.Windows: which windows are trained on), ``cfg.optimization``
(optim.OptimizerOptions), ``cfg.schedule`` (optim.Schedule), ``cfg.stopping`` (stop_rules.StopOptions) and
``cfg.generation`` (``Generation`` below: the samples a run writes). A group holds the option values by their names;
the flags, YAML keys and notebook parameters stay the flat names of ``TrainConfig``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from .data import SAMPLINGS, WINDOW_ORDERS, Windows
from .device import AMP_CHOICES, DEVICE_CHOICES
from .errors import UserError
from .model import PRESETS
from .optim import OptimizerOptions, Schedule
from .stop_rules import StopOptions

AUTO = "auto"  # the value of --batch_size and --compile that leaves the choice to this machine (plan.py)


def check_temperature(temperature: float) -> None:
    """Sampling divides the logits by the temperature: it must be positive (this also refuses NaN)."""
    if not temperature > 0:
        raise UserError(f"--temperature must be > 0, got {temperature}")


@dataclass(frozen=True)
class Generation:
    """The samples a run writes at each sampling event (``TrainConfig.generation``): ``num_prompts`` continuations of
    each prompt, ``max_new_tokens`` long, at ``temperature`` from the ``top_k`` most likely tokens, seeded from
    ``seed``."""

    prompts: list[str]
    num_prompts: int
    max_new_tokens: int
    temperature: float
    top_k: int
    seed: int


G = TypeVar("G")


class _Group(Generic[G]):
    """A TrainConfig attribute that reads as the group ``kind`` of its options: each field of ``kind`` the option (or
    property) of the same name. Not a dataclass field, so no flag, YAML key or entry of run_config.json."""

    def __init__(self, kind: type[G]) -> None:
        self.kind = kind

    def __get__(self, cfg: Any, owner: type | None = None) -> G:
        if cfg is None:
            return self  # type: ignore[return-value]  # read from the class: the descriptor itself
        return self.kind(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(self.kind)})


def _opt(default: Any, help: str, **argparse_kwargs: Any) -> Any:
    """A TrainConfig field with its CLI help (and optional argparse extras such as choices)."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass
class TrainConfig:
    # data and run directory
    input_file: str = _opt("data/input.txt", "text file to train on (UTF-8; tiny-shakespeare for the course)")
    out_dir: str = _opt("out", "run directory: logs, metrics CSV, samples, checkpoints, summary.json")
    model: str = _opt("gpt2-124m", "model preset", choices=tuple(PRESETS))
    # optimisation
    steps: int = _opt(200000, "total number of optimizer steps (resuming with a larger value extends the run)")
    batch_size: int | str = _opt(
        8,
        "sequences per micro-batch, or auto: the largest that fits this GPU at --seq_len (on a CPU: at most 2,048 "
        "tokens), with --tokens_per_step kept exactly",
    )
    seq_len: int = _opt(256, "tokens per sequence (at most the model's block_size)")
    sampling: str = _opt(
        "random",
        "how training windows are drawn: random offsets, or epoch (passes over the corpus, every token once per pass, "
        "windows in a fresh random order at a random phase each pass)",
        choices=SAMPLINGS,
    )
    window_order: str = _opt(
        "random_phase",
        "epoch sampling: where each pass cuts its windows: at a random phase (the model learns every cut of the "
        "text), at phase 0 (exactly the windows of the full-corpus loss), or at random phases until the wsd decay "
        "and at phase 0 from the first pass that begins in it",
        choices=WINDOW_ORDERS,
    )
    aligned_after_passes: int = _opt(
        0,
        "epoch sampling: the passes after this many start at phase 0, on exactly the windows of the full-corpus loss "
        "(0: as --window_order says)",
    )
    grad_accum: int = _opt(
        4,
        "micro-batches per optimizer step (tokens/step = batch_size*seq_len*grad_accum; with --tokens_per_step it "
        "follows from that and the micro-batch)",
    )
    tokens_per_step: int = _opt(
        0,
        "tokens per optimizer step, a multiple of --seq_len: --grad_accum follows from it and the micro-batch "
        "(needed by --batch_size auto; 0: batch_size*seq_len*grad_accum)",
    )
    optimizer: str = _opt(
        "adamw",
        "adamw for every parameter, or muon for the 2-D matrices inside the transformer blocks (at --muon_lr) and "
        "AdamW (at --lr) for the embeddings, gains and biases",
        choices=("adamw", "muon"),
    )
    lr: float = _opt(3e-4, "peak learning rate (of AdamW)")
    muon_lr: float = _opt(0.02, "peak learning rate of Muon (with --optimizer muon)")
    muon_momentum: float = _opt(0.95, "Muon momentum (Nesterov)")
    lr_schedule: str = _opt(
        "constant",
        "learning-rate schedule after warm-up: constant, cosine down to --min_lr, or wsd (stable at the peak, then "
        "a straight line down to --min_lr over the last --cooldown_frac of the schedule)",
        choices=("constant", "cosine", "wsd"),
    )
    warmup_steps: int = _opt(0, "steps of linear learning-rate warm-up from 0 to --lr")
    min_lr: float = _opt(3e-5, "final learning rate of the cosine and wsd schedules (Muon's: the same fraction)")
    decay_steps: int = _opt(
        0, "the step at which the cosine or wsd schedule reaches --min_lr and stays there (0: --steps)"
    )
    cooldown_frac: float = _opt(0.3, "wsd schedule: the last fraction of its steps (after warm-up) spent decaying")
    weight_decay: float = _opt(0.01, "AdamW weight decay on weight matrices (never on biases and norms)")
    beta1: float = _opt(0.9, "AdamW beta1")
    beta2: float = _opt(0.95, "AdamW beta2")
    grad_clip: float = _opt(1.0, "clip the global gradient norm to this value (0 disables clipping)")
    dropout: float = _opt(0.0, "dropout probability in the model")
    # stopping
    target_loss: float = _opt(0.099999, "stop when the training loss is at or below this value")
    stop_on: str = _opt(
        "step",
        "which loss must reach --target_loss to stop: the optimizer step's loss, or the full-corpus loss (a pass "
        "over the whole corpus runs when the mean step loss of the last --log_every steps predicts the target)",
        choices=("step", "corpus"),
    )
    # hardware
    device: str = _opt("auto", "where to train (auto picks cuda, then mps, then cpu)", choices=DEVICE_CHOICES)
    amp: str = _opt(
        "auto",
        "mixed precision (auto: bf16 on CUDA GPUs that have it, fp16 on older ones; bf16 on CPUs with native bf16 "
        "matrix instructions (AMX, AVX512-BF16), fp32 on other CPUs and on MPS)",
        choices=AMP_CHOICES,
    )
    compile: bool | str = _opt(
        False,
        "compile the model with torch.compile: true, false, or auto (where it works and pays: CUDA with Triton on a "
        "card it supports; eager on a CPU); a compilation that fails at the first step falls back to eager",
    )
    seed: int = _opt(1337, "random seed for initialisation, batches and samples")
    # reporting
    log_every: int = _opt(50, "write a log line and a metrics row every N steps")
    save_every: int = _opt(2000, "save checkpoints/last.pt every N steps (0: only at the end)")
    sample_every: int = _opt(2000, "write samples every N steps (0: only at the end)")
    eval_every: int = _opt(0, "compute the full-corpus loss every N steps (0: only when the target is reached)")
    # sampling
    prompt: str = _opt("BIANCA:\n", "prompt for the samples (the two characters \\n stand for a newline)")
    extra_prompts: str = _opt(
        "", "more prompts sampled at each event, separated by | (e.g. 'ROMEO:\\n|First Citizen:\\n')"
    )
    num_prompts: int = _opt(1, "number of generations per prompt and sampling event")
    max_new_tokens: int = _opt(200, "tokens generated per sample")
    top_k: int = _opt(200, "sample from the k most likely tokens only (0 disables top-k filtering)")
    temperature: float = _opt(0.8, "sampling temperature (> 0; lower is more conservative)")
    # run management
    resume: bool = _opt(False, "continue from out_dir/checkpoints/last.pt if it exists (otherwise start fresh)")
    overwrite: bool = _opt(False, "start fresh in an out_dir that already holds a run, replacing its files")

    def __post_init__(self) -> None:
        self.prompt = self.prompt.replace("\\n", "\n")
        self.extra_prompts = self.extra_prompts.replace("\\n", "\n")
        self.compile = _switch(self.compile)
        if isinstance(self.batch_size, str) and self.batch_size != AUTO:
            self.batch_size = _number("batch_size", self.batch_size, int)

    @property
    def prompts(self) -> list[str]:
        """``prompt``, then each non-empty prompt of ``extra_prompts``."""
        return [self.prompt, *(p for p in self.extra_prompts.split("|") if p.strip())]

    # the groups (see the module's text), each built from the options of its names when read
    windows = _Group(Windows)
    optimization = _Group(OptimizerOptions)
    schedule = _Group(Schedule)
    stopping = _Group(StopOptions)
    generation = _Group(Generation)

    def validate(self) -> None:
        """Raise UserError naming the first option that cannot work."""
        if self.batch_size != AUTO and not (isinstance(self.batch_size, int) and self.batch_size > 0):
            raise UserError(f"--batch_size must be a positive integer or auto, got {self.batch_size!r}")
        if self.compile not in (True, False, AUTO):
            raise UserError(f"--compile must be true, false or auto, got {self.compile!r}")
        for name in ("steps", "seq_len", "grad_accum", "log_every", "num_prompts", "max_new_tokens"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name} must be a positive integer, got {getattr(self, name)}")
        self._check_step_shape()
        for name in (
            "save_every",
            "sample_every",
            "eval_every",
            "warmup_steps",
            "decay_steps",
            "top_k",
            "aligned_after_passes",
        ):
            if getattr(self, name) < 0:
                raise UserError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if self.decay_steps and self.decay_steps <= self.warmup_steps:
            raise UserError(
                f"--decay_steps ({self.decay_steps}) must come after the warm-up (--warmup_steps {self.warmup_steps})"
            )
        if self.lr_schedule != "constant" and not 0 <= self.min_lr <= self.lr:
            raise UserError(
                f"--min_lr must be between 0 and --lr ({self.lr}) for the {self.lr_schedule} schedule, "
                f"got {self.min_lr}"
            )
        if not 0 < self.cooldown_frac <= 1:
            raise UserError(f"--cooldown_frac must be in (0, 1], got {self.cooldown_frac}")
        if not self.muon_lr > 0:
            raise UserError(f"--muon_lr must be > 0, got {self.muon_lr}")
        for name in ("weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2", "dropout", "muon_momentum"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.prompt:
            raise UserError("--prompt must not be empty: samples continue a prompt")
        check_temperature(self.temperature)
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite contradict each other; pass only one")
        for name in ("model", "sampling", "window_order", "optimizer", "lr_schedule", "stop_on", "device", "amp"):
            choices = _field(name).metadata["choices"]
            if getattr(self, name) not in choices:
                raise UserError(f"--{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        if self.aligned_after_passes and self.sampling != "epoch":
            raise UserError("--aligned_after_passes applies to passes over the corpus: use it with --sampling epoch")
        if self.window_order != "random_phase" and self.sampling != "epoch":
            raise UserError(f"--window_order {self.window_order} orders passes over the corpus: use --sampling epoch")
        if self.window_order == "measured_in_decay" and self.lr_schedule != "wsd":
            raise UserError("--window_order measured_in_decay switches at the wsd decay: use --lr_schedule wsd")
        block_size = PRESETS[self.model].block_size
        if self.seq_len > block_size:
            raise UserError(f"--seq_len {self.seq_len} is longer than the {self.model} context of {block_size} tokens")

    def _check_step_shape(self) -> None:
        if self.tokens_per_step < 0 or self.tokens_per_step % self.seq_len:
            raise UserError(
                f"--tokens_per_step must be a multiple of --seq_len {self.seq_len}, got {self.tokens_per_step}"
            )
        if self.batch_size == AUTO and not self.tokens_per_step:
            raise UserError("--batch_size auto keeps the tokens of a step: give them with --tokens_per_step")
        sequences = self.tokens_per_step // self.seq_len
        if self.tokens_per_step and self.batch_size != AUTO and sequences % self.batch_size:
            raise UserError(
                f"--tokens_per_step {self.tokens_per_step} is {sequences} sequences of {self.seq_len}: --batch_size "
                f"{self.batch_size} does not divide them (or use --batch_size auto)"
            )

    @property
    def step_tokens(self) -> int:
        """Tokens per optimizer step (of one process): --tokens_per_step, or batch_size x seq_len x grad_accum."""
        return self.tokens_per_step or self.batch_size * self.seq_len * self.grad_accum

    def with_micro_batch(self, batch_size: int) -> TrainConfig:
        """These options with a micro-batch of ``batch_size`` sequences, and ``grad_accum`` such that the step keeps
        its tokens (``tokens_per_step`` when given)."""
        grad_accum = self.step_tokens // (batch_size * self.seq_len) if self.tokens_per_step else self.grad_accum
        return dataclasses.replace(self, batch_size=batch_size, grad_accum=grad_accum)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (papermill parameters, a JSON file), refusing unknown names."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown training option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**{name: _number(name, value) for name, value in values.items()})


GROUPS = tuple(name for name, value in vars(TrainConfig).items() if isinstance(value, _Group))


def _switch_flag(text: str) -> bool | str:
    value = _switch(text)
    if value not in (True, False, AUTO):
        raise argparse.ArgumentTypeError(f"expected true, false or auto, got {text!r}")
    return value


def _int_or_auto(text: str) -> int | str:
    if text == AUTO:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, got {text!r}") from None


def _switch(value: Any) -> Any:
    """A true/false-or-auto option as given by a flag, YAML or papermill (``true``, ``False``, ``auto``, ...)."""
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    return value


def _number(name: str, value: Any, kind: type | None = None) -> Any:
    """A numeric option given as text, as YAML reads ``3e-5`` (no dot: a string in YAML 1.1), made a number."""
    kind = kind or {"float": float, "int": int}.get(_field(name).type)
    if kind is None or not isinstance(value, str):
        return value
    try:
        return kind(value)
    except ValueError:
        raise UserError(f"--{name} must be a number, got {value!r}") from None


def _field(name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(TrainConfig) if f.name == name)


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one flag per TrainConfig field, same name, default and help."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for f in dataclasses.fields(TrainConfig):
        shown_default = f.default.replace("\n", "\\n") if isinstance(f.default, str) else f.default
        kwargs: dict[str, Any] = {"default": f.default, "help": f"{f.metadata['help']} (default: {shown_default})"}
        if f.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["help"] = f.metadata["help"]
        elif f.type == "bool | str":  # --compile, --compile auto, --compile false, --no-compile
            kwargs.update(nargs="?", const=True, type=_switch_flag, metavar="{true,false,auto}")
            parser.add_argument(f"--{f.name}", **kwargs)
            kwargs = {"dest": f.name, "action": "store_false", "default": f.default, "help": f"--{f.name} false"}
            parser.add_argument(f"--no-{f.name}", **kwargs)
            continue
        elif f.type == "int | str":  # --batch_size 8, --batch_size auto
            kwargs.update(type=_int_or_auto, metavar=f"{{N,{AUTO}}}")
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[f.type]
            kwargs["metavar"] = f.name.upper()
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
                kwargs["metavar"] = "{" + ",".join(f.metadata["choices"]) + "}"
        parser.add_argument(f"--{f.name}", **kwargs)
    return parser


def load_options(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML (or JSON, which is YAML too) file of options, as papermill's ``-f`` reads it."""

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of option names to values")
    return data


def parse_train_args(argv: list[str] | None, prog: str, description: str) -> TrainConfig:
    """Flags over the options of ``--config FILE`` (if given) over the dataclass defaults."""
    parser = build_parser(prog, description)
    parser.add_argument("--config", metavar="FILE", help="YAML file of options (flags given too take precedence)")
    known, _ = parser.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**vars(TrainConfig.from_dict(load_options(known.config))))
    args = vars(parser.parse_args(argv))
    args.pop("config")
    return TrainConfig(**args)
