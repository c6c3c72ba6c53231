"""The optimizers and the schedule: what Muon updates, the shape of the schedules at their corners, exact resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nanogpt_lib import checkpoint
from nanogpt_lib.config import TrainConfig, load_options
from nanogpt_lib.errors import UserError
from nanogpt_lib.model import GPT, model_config
from nanogpt_lib.optim import decay_start, lr_at, make_optimizers, set_learning_rates

from .conftest import ROOT, tiny_args
from .test_train import read_metrics, train


def test_muon_takes_exactly_the_matrices_inside_the_blocks_and_adamw_the_rest() -> None:
    model = GPT(model_config("tiny"))
    adamw, muon = make_optimizers(model, TrainConfig(model="tiny", optimizer="muon").optimization)
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(muon, torch.optim.Muon)
    names = {id(p): n for n, p in model.named_parameters()}
    by_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    by_adamw = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    assert not by_muon & by_adamw and by_muon | by_adamw == set(names.values())
    suffixes = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    expected = {f"transformer.h.{i}.{s}" for i in range(model.config.n_layer) for s in suffixes}
    assert by_muon == expected
    assert "transformer.wte.weight" in by_adamw and "transformer.wpe.weight" in by_adamw  # wte is also the head
    (only,) = make_optimizers(model, TrainConfig(model="tiny").optimization)  # the default: one AdamW over everything
    assert sum(len(g["params"]) for g in only.param_groups) == len(names)


def test_a_muon_step_moves_only_its_own_parameters() -> None:
    torch.manual_seed(0)
    model = GPT(model_config("tiny"))
    adamw, muon = make_optimizers(model, TrainConfig(model="tiny", optimizer="muon").optimization)
    x = torch.randint(model.config.vocab_size, (2, 16))
    _, loss = model(x, x)
    loss.backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    muon.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {
        n for g in muon.param_groups for n, p in model.named_parameters() if any(p is q for q in g["params"])
    }


def test_the_wsd_schedule_at_its_corners() -> None:
    cfg = TrainConfig(steps=1000, lr=1e-3, min_lr=1e-4, warmup_steps=10, lr_schedule="wsd", decay_steps=110,
                      cooldown_frac=0.4).schedule  # fmt: skip
    assert decay_start(cfg) == 70  # the last 40 of the 100 steps after warm-up decay
    assert lr_at(5, cfg) == pytest.approx(5e-4) and lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(11, cfg) == lr_at(70, cfg) == pytest.approx(1e-3)  # stable
    assert lr_at(71, cfg) < 1e-3 and lr_at(90, cfg) == pytest.approx(5.5e-4)  # a straight line down
    assert lr_at(110, cfg) == lr_at(999, cfg) == pytest.approx(1e-4)  # the floor, and it stays there
    whole = TrainConfig(
        steps=100, lr=1e-3, min_lr=0.0, lr_schedule="wsd", cooldown_frac=1.0
    ).schedule  # no decay_steps: --steps
    assert lr_at(1, whole) == pytest.approx(0.99e-3) and lr_at(100, whole) == 0.0


def test_every_group_follows_the_schedule_from_its_own_peak() -> None:
    model = GPT(model_config("tiny"))
    cfg = TrainConfig(model="tiny", optimizer="muon", lr=1e-3, muon_lr=0.02, min_lr=1e-4, lr_schedule="cosine",
                      steps=100)  # fmt: skip
    optimizers = make_optimizers(model, cfg.optimization)
    assert set_learning_rates(optimizers, 100, cfg.schedule) == pytest.approx(1e-4)
    assert [g["lr"] for o in optimizers for g in o.param_groups] == pytest.approx([1e-4, 1e-4, 2e-3])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr_schedule", "wsd", "--cooldown_frac", "0"], "--cooldown_frac must be in"),
        (["--lr_schedule", "wsd", "--min_lr", "1"], "--min_lr must be between 0 and --lr"),
        (["--optimizer", "muon", "--muon_lr", "0"], "--muon_lr must be > 0"),
        (["--muon_momentum", "1"], "--muon_momentum must be in"),
        (["--window_order", "measured"], "use --sampling epoch"),
        (["--sampling", "epoch", "--window_order", "measured_in_decay"], "use --lr_schedule wsd"),
    ],
)
def test_the_new_options_are_checked(flags: list[str], message: str) -> None:
    from nanogpt_lib.config import parse_train_args

    with pytest.raises(UserError, match=message):
        parse_train_args(flags, "t", "t").validate()


# The split run stops at step 3 and resumes to step 6: the schedules end at --decay_steps, not at --steps.
RESUMED_RECIPES = {
    "muon-wsd": ["--optimizer", "muon", "--muon_lr", "0.01", "--lr_schedule", "wsd", "--min_lr", "1e-4",
                 "--decay_steps", "6"],
    "measured": ["--sampling", "epoch", "--window_order", "measured"],
    "measured-in-decay": ["--sampling", "epoch", "--window_order", "measured_in_decay", "--lr_schedule", "wsd",
                          "--cooldown_frac", "0.5", "--min_lr", "1e-4", "--optimizer", "muon", "--decay_steps", "6"],
}  # fmt: skip


@pytest.mark.parametrize("recipe", sorted(RESUMED_RECIPES))
def test_a_resume_continues_each_new_option_exactly(recipe: str, small_corpus: Path, tmp_path: Path) -> None:
    flags = RESUMED_RECIPES[recipe]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(*tiny_args(small_corpus, straight, *flags)) == 0
    assert train(*tiny_args(small_corpus, split, *flags, "--steps", "3")) == 0
    assert train(*tiny_args(small_corpus, split, *flags, "--resume")) == 0
    assert [r["loss"] for r in read_metrics(split)] == [r["loss"] for r in read_metrics(straight)]
    a = checkpoint.load(straight / "checkpoints" / "last.pt", kind=checkpoint.KIND_RESUME)
    b = checkpoint.load(split / "checkpoints" / "last.pt", kind=checkpoint.KIND_RESUME)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert ("muon" in a) == ("muon" in flags)
    if "muon" in a:  # Muon's momentum buffers are in last.pt and came back
        assert all(torch.equal(x["momentum_buffer"], y["momentum_buffer"])
                   for x, y in zip(a["muon"]["state"].values(), b["muon"]["state"].values(), strict=True))  # fmt: skip
    config = json.loads((split / "run_config.json").read_text())
    assert config["train_config"]["window_order"] == (flags[flags.index("--window_order") + 1] if "--window_order"
                                                      in flags else "random_phase")  # fmt: skip


def test_a_resume_refuses_another_optimizer(small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(*tiny_args(small_corpus, out, "--steps", "2", "--save_every", "1")) == 0
    assert train(*tiny_args(small_corpus, out, "--resume", "--optimizer", "muon")) == 2


@pytest.mark.parametrize("path", sorted((ROOT / "params").glob("*-124m*.yaml")), ids=lambda p: p.name)
def test_the_recipe_files_load_and_validate(path: Path) -> None:
    TrainConfig.from_dict(load_options(path)).validate()
