"""The options: one dataclass drives the CLI, with the reference script's flags, names and defaults."""

from __future__ import annotations

import dataclasses

import pytest

from nanogpt_lib.config import GROUPS, TrainConfig, build_parser, parse_train_args
from nanogpt_lib.errors import UserError

REFERENCE_FLAGS = (
    "input_file out_dir steps batch_size seq_len grad_accum lr log_every save_every sample_every amp target_loss "
    "prompt num_prompts max_new_tokens top_k temperature"
).split()
MORE_FLAGS = (
    "seed device model resume compile warmup_steps lr_schedule min_lr weight_decay grad_clip eval_every"
).split()
SANITY = (
    "--input_file data/input.txt --out_dir out_sanity --steps 200 --batch_size 4 --seq_len 128 --grad_accum 1 "
    "--lr 3e-4 --log_every 10 --save_every 100 --sample_every 100"
).split()
FULL = (
    "--input_file data/input.txt --out_dir out --steps 200000 --batch_size 8 --seq_len 256 --grad_accum 4 "
    "--lr 3e-4 --log_every 50 --save_every 2000 --sample_every 2000"
).split()


def parse(argv: list[str]) -> TrainConfig:
    return parse_train_args(argv, prog="test", description="test")


def test_every_flag_comes_from_the_dataclass() -> None:
    parser = build_parser("test", "test")
    flags = {a.dest for a in parser._actions if a.dest != "help"}
    assert flags == {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(REFERENCE_FLAGS + MORE_FLAGS) <= flags


def test_each_group_holds_the_options_of_its_names_and_adds_no_flag() -> None:
    cfg = TrainConfig(
        model="tiny", seq_len=32, sampling="epoch", lr=1e-3, min_lr=1e-5, lr_schedule="wsd", target_loss=0.5,
        stop_on="corpus", extra_prompts="ROMEO:|JULIET:", top_k=5, seed=7,
    )  # fmt: skip
    options = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in GROUPS:
        group = getattr(cfg, name)
        for f in dataclasses.fields(group):
            assert f.name in options or f.name == "prompts", f"{name}.{f.name} is no option of TrainConfig"
            assert getattr(group, f.name) == getattr(cfg, f.name), f"{name}.{f.name}"
    assert cfg.generation.prompts == ["BIANCA:\n", "ROMEO:", "JULIET:"]
    assert {a.dest for a in build_parser("t", "d")._actions} - {"help"} == options  # one flag per option, no more


def test_reference_defaults() -> None:
    cfg = parse([])
    assert cfg.target_loss == 0.099999
    assert cfg.prompt == "BIANCA:\n"
    assert cfg.lr_schedule == "constant" and cfg.amp == "auto" and cfg.model == "gpt2-124m"


def test_reference_commands_parse_verbatim() -> None:
    sanity = parse(SANITY)
    assert (sanity.steps, sanity.batch_size, sanity.seq_len, sanity.grad_accum, sanity.lr) == (200, 4, 128, 1, 3e-4)
    assert (sanity.log_every, sanity.save_every, sanity.sample_every) == (10, 100, 100)
    full = parse(FULL)
    assert full.step_tokens == 8 * 256 * 4
    sanity.validate()
    full.validate()


def test_prompt_backslash_n_is_a_newline_and_booleans_toggle() -> None:
    cfg = parse(["--prompt", "ROMEO:\\n", "--compile", "--resume"])
    assert cfg.prompt == "ROMEO:\n" and cfg.compile and cfg.resume
    assert parse(["--no-compile"]).compile is False


def test_help_explains_each_flag(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in REFERENCE_FLAGS + MORE_FLAGS:
        assert f"--{flag}" in out
    assert "default: BIANCA:\\n" in out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps", "0"], "--steps must be a positive integer"),
        (["--batch_size", "-1"], "--batch_size must be a positive integer"),
        (["--seq_len", "0"], "--seq_len must be a positive integer"),
        (["--grad_accum", "0"], "--grad_accum must be a positive integer"),
        (["--seq_len", "2048"], "longer than the gpt2-124m context of 1024"),
        (["--model", "tiny", "--seq_len", "512"], "longer than the tiny context of 256"),
        (["--lr=-1e-3"], "--lr must be > 0"),
        (["--temperature", "0"], "--temperature must be > 0"),
        (["--temperature", "-0.5"], "--temperature must be > 0"),
        (["--top_k", "-1"], "--top_k must be >= 0"),
        (["--resume", "--overwrite"], "contradict"),
    ],
)
def test_validation_names_the_bad_option(flags: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse(flags).validate()


def test_from_dict_refuses_unknown_names() -> None:
    assert TrainConfig.from_dict({"steps": 5}).steps == 5
    with pytest.raises(UserError, match="unknown training option.*stpes"):
        TrainConfig.from_dict({"stpes": 5})


def test_numbers_written_as_yaml_reads_them_become_numbers() -> None:
    config = TrainConfig.from_dict({"min_lr": "3e-5", "lr": "1E-4", "steps": "7"})  # YAML 1.1: "3e-5" is text
    assert (config.min_lr, config.lr, config.steps) == (3e-5, 1e-4, 7)
    with pytest.raises(UserError, match="--lr must be a number, got 'fast'"):
        TrainConfig.from_dict({"lr": "fast"})
