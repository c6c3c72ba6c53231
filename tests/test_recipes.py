"""The proven recipes: which file make overnight picks for a device, and what it says to expect."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from nanogpt_lib import recipes
from nanogpt_lib.config import TrainConfig, load_options
from nanogpt_lib.errors import UserError
from nanogpt_lib.plan import make_plan

from .conftest import ROOT, run_module


def test_each_device_gets_its_recipe_and_the_reference_is_one_word_away() -> None:
    assert recipes.choose("auto", "cpu").params == "params/cpu-124m.yaml"
    assert recipes.choose("auto", "mps").params == "params/cpu-124m.yaml"
    assert recipes.choose("auto", "cuda").params == "params/gpu-124m.yaml"
    assert recipes.choose("gpu", "cpu").name == "gpu" and recipes.choose("reference", "cuda") is None
    with pytest.raises(UserError, match="unknown recipe 'fast'"):
        recipes.choose("fast", "cpu")
    for recipe in recipes.RECIPES:  # every recipe file is a valid set of options
        TrainConfig.from_dict(load_options(ROOT / recipe.params)).validate()


def test_the_papermill_option_names_the_recipe_file() -> None:
    auto = run_module("nanogpt_lib.recipes", "auto", "--papermill", "--device", "cpu")
    assert auto.returncode == 0 and auto.stdout.strip() == "-f params/cpu-124m.yaml"
    reference = run_module("nanogpt_lib.recipes", "reference", "--papermill")
    assert reference.returncode == 0 and reference.stdout.strip() == ""


def test_a_run_is_matched_to_its_recipe_whatever_its_folder_and_prompts() -> None:
    cpu = TrainConfig.from_dict(load_options(ROOT / "params" / "cpu-124m.yaml"))
    assert recipes.matching(dataclasses.replace(cpu, out_dir="elsewhere", resume=True, prompt="X")).name == "cpu"
    assert recipes.matching(dataclasses.replace(cpu, lr=cpu.lr * 2)) is None
    assert recipes.matching(TrainConfig()) is None  # the course's reference recipe


def test_the_expectation_quotes_the_committed_run_and_estimates_the_time(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "params").mkdir()
    shutil.copy(ROOT / "params" / "cpu-124m.yaml", tmp_path / "params")
    monkeypatch.setattr(recipes, "ROOT", tmp_path)
    recipe = recipes.for_device("cpu")
    cfg = dataclasses.replace(TrainConfig.from_dict(load_options(tmp_path / recipe.params)), model="tiny", seq_len=32)
    monkeypatch.setattr(recipes, "matching", lambda c: recipe)  # a tiny model stands in for the recipe's
    assert "no committed run of this recipe yet" in recipes.expectation(cfg, measure=False)
    evidence = tmp_path / recipe.evidence
    evidence.mkdir(parents=True)
    summary = {"status": "target_reached", "tokens_seen": 4_000_000, "steps": 1_000, "device": "CPU", "amp": "off"}
    (evidence / "summary.json").write_text(json.dumps(summary))
    state = torch.get_rng_state()
    text = recipes.expectation(cfg)
    assert torch.equal(torch.get_rng_state(), state)  # the timed steps leave training's random state alone
    assert "reached the target after 4,000,000 tokens, 1,000 steps" in text
    assert "tokens/s of forward and backward" in text and "of training here" in text


def test_a_committed_run_still_training_is_quoted_from_its_log(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(recipes, "ROOT", tmp_path)
    recipe = recipes.for_device("cpu")
    evidence = tmp_path / recipe.evidence
    evidence.mkdir(parents=True)
    stopped = {"status": "interrupted", "tokens_seen": 2_048, "steps": 2, "device": "CPU", "amp": "off"}
    (evidence / "summary.json").write_text(json.dumps(stopped))
    assert "not reached the target yet: 2,048 tokens in 2 steps so far" in recipes.committed_run(recipe, stopped)
    (evidence / "train_metrics.csv").write_text("step,loss,tokens_seen,elapsed_s\n2,5.0,2048,9.0\n6,4.0,6144,30.0\n")
    assert "not reached the target yet: 6,144 tokens in 6 steps so far" in recipes.committed_run(recipe, stopped)


def test_the_speed_is_measured_under_the_settings_training_uses(monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(recipes, "configure_backends", lambda device: calls.append(device.type) or {})
    cfg = dataclasses.replace(TrainConfig(), model="tiny", seq_len=32, batch_size=2, device="cpu", amp="off")
    plan = make_plan(cfg, torch.device("cpu"))
    tok_s, where = recipes.measure_speed(cfg, plan, steps=1, untimed=1)
    assert calls == ["cpu"] and tok_s > 0 and "amp off" in where
