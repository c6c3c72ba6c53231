"""The Hugging Face export: transformers alone loads it and computes what our model computes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nanogpt_lib import checkpoint, export, model_card
from nanogpt_lib.errors import UserError
from nanogpt_lib.sample import load_model
from nanogpt_lib.tokenizer import get_tokenizer, packaged_bpe_files

from .conftest import ROOT, run_module
from .test_errors import fails_cleanly
from .tiny_export import export_run, train_tiny

transformers = pytest.importorskip("transformers")

EXPECTED_FILES = {
    "config.json", "generation_config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "README.md", "loss_curve.png",
}  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export")
    run = train_tiny(folder)
    return {"run": run, "best": run / "checkpoints" / "best.pt", "out": export_run(run, folder / "hf")}


@pytest.fixture(scope="module")
def ours(exported) -> torch.nn.Module:
    return load_model(str(exported["best"]), torch.device("cpu"))


@pytest.fixture(scope="module")
def theirs(exported):
    return transformers.GPT2LMHeadModel.from_pretrained(exported["out"]).eval()


def test_export_writes_the_files_of_a_hub_model(exported) -> None:
    out = exported["out"]
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES  # no pickle (.bin, .pt) among them
    bpe = packaged_bpe_files()
    assert (out / "vocab.json").read_bytes() == bpe["encoder.json"].read_bytes()
    assert (out / "merges.txt").read_bytes() == bpe["vocab.bpe"].read_bytes()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert (config["n_layer"], config["n_head"], config["n_embd"], config["n_positions"]) == (2, 4, 128, 256)
    assert json.loads((out / "special_tokens_map.json").read_text())["eos_token"] == "<|endoftext|>"
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # the temporary folder is gone


def test_logits_equal_ours(exported, ours, theirs) -> None:
    corpus_ids = get_tokenizer().encode_ordinary((exported["run"].parent / "small.txt").read_text()[:600])
    random_ids = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(1))
    for x in (torch.tensor([corpus_ids[:200]]), random_ids):
        with torch.no_grad():
            expected, _ = ours(x)
            got = theirs(x).logits
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_greedy_generation_equals_ours(ours, theirs) -> None:
    prompt = torch.tensor([get_tokenizer().encode_ordinary("ROMEO:\n")])
    expected = ours.generate(prompt, 40, top_k=1)  # one candidate: always the most likely token
    got = theirs.generate(prompt, max_new_tokens=40, do_sample=False, attention_mask=torch.ones_like(prompt))
    assert got.tolist() == expected.tolist()


def test_tokenizer_encodes_the_corpus_like_ours(exported, course_file: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported["out"])
    for path in (exported["run"].parent / "small.txt", course_file):  # the corpus trained on, and the whole file
        text = path.read_text(encoding="utf-8")
        ids = tokenizer(text)["input_ids"]
        assert ids == get_tokenizer().encode_ordinary(text)
        assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>" and tokenizer.eos_token_id == 50256


def test_text_generation_pipeline_runs_from_the_folder(exported) -> None:
    generator = transformers.pipeline("text-generation", model=str(exported["out"]), device="cpu")
    text = generator("BIANCA:\n", max_new_tokens=12, do_sample=False)[0]["generated_text"]
    assert text.startswith("BIANCA:\n") and len(text) > len("BIANCA:\n")
    sampled = generator("BIANCA:\n", max_new_tokens=5)[0]["generated_text"]  # generation_config.json: sampling
    assert sampled.startswith("BIANCA:\n")


def test_model_card_holds_metadata_and_the_run_numbers(exported) -> None:
    import yaml

    card = (exported["out"] / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "mit" and meta["pipeline_tag"] == "text-generation" and "gpt2" in meta["tags"]
    summary = json.loads((exported["run"] / "summary.json").read_text())
    table = card.split(model_card.SUMMARY_START)[1].split(model_card.SUMMARY_END)[0]
    app = (ROOT / "space" / "app.py").read_text(encoding="utf-8")  # the Space finds the table by the same markers
    assert f'"{model_card.SUMMARY_START}"' in app and f'"{model_card.SUMMARY_END}"' in app
    assert f"| optimizer steps | {summary['steps']} (of at most 8) |" in table
    assert f"| final step loss | {summary['final_step_loss']:.4f} |" in table
    assert "| full-corpus loss | not available |" in table  # a run that never reached its target never measured it
    # the text by name and hash, never by the path of the machine that trained (the card is a public page)
    config = json.loads((exported["run"] / "run_config.json").read_text())
    assert config["train_config"]["input_file"].startswith("/")
    tokens, sha256 = config["tokens_in_corpus"], config["input"]["sha256"]
    assert f"| data | `small.txt` ({tokens:,} tokens, sha256 {sha256}) |" in table
    assert config["train_config"]["input_file"] not in card and "/small.txt" not in card
    assert "![Training loss](loss_curve.png)" in card
    assert (exported["out"] / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_checkpoint_outside_its_run_gets_a_card_without_numbers(exported, tmp_path: Path) -> None:
    lone = tmp_path / "somewhere" / "else" / "best.pt"
    lone.parent.mkdir(parents=True)
    shutil.copyfile(exported["best"], lone)
    assert export.main(["--checkpoint", str(lone), "--out", str(tmp_path / "hf")]) == 0
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert "| optimizer steps | not available |" in card and "| hardware | not available |" in card
    assert "Loss curve: not available." in card and not (tmp_path / "hf" / "loss_curve.png").exists()


def test_a_damaged_summary_leaves_its_numbers_out(capsys, exported, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copyfile(exported["best"], run / "checkpoints" / "best.pt")
    shutil.copyfile(exported["run"] / "run_config.json", run / "run_config.json")
    (run / "summary.json").write_text('{"steps": 8,')  # cut off mid-write by hand
    assert export.main(["--checkpoint", str(run / "checkpoints" / "best.pt"), "--out", str(tmp_path / "hf")]) == 0
    assert "summary.json is not valid JSON" in capsys.readouterr().err
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert card.splitlines().count("# run") == 1  # named after its run directory
    assert "| optimizer steps | not available |" in card and "small.txt` (" in card  # run_config.json still read


def test_float16_export_stores_float16_weights(exported, ours, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = export_run(exported["run"], tmp_path / "hf16", "--dtype", "float16")
    weights = load_file(out / "model.safetensors")
    assert weights and {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    assert json.loads((out / "config.json").read_text()).get("dtype", "float16") == "float16"
    theirs = transformers.GPT2LMHeadModel.from_pretrained(out).float().eval()
    x = torch.randint(0, 50257, (1, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, ours(x)[0], rtol=0, atol=5e-2)


@pytest.mark.parametrize("damage", ["missing", "truncated", "random bytes", "another kind"])
def test_damaged_checkpoint_is_refused(capsys, exported, tmp_path: Path, damage: str) -> None:
    bad = tmp_path / "best.pt"
    if damage == "truncated":
        bad.write_bytes(exported["best"].read_bytes()[:5000])
        message = "cannot be read"
    elif damage == "random bytes":
        bad.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
        message = "cannot be read"
    elif damage == "another kind":
        ckpt = checkpoint.load(exported["best"], kind=checkpoint.KIND_WEIGHTS)
        torch.save({**ckpt, "kind": "optimizer"}, bad)
        message = "is of kind 'optimizer'"
    else:
        message = "not found"
    out = tmp_path / "hf"
    fails_cleanly(capsys, export.main, ["--checkpoint", str(bad), "--out", str(out)], message)
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_out_that_is_not_empty_is_refused(capsys, exported, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["--checkpoint", str(exported["best"]), "--out", str(out)]
    fails_cleanly(capsys, export.main, argv, "already exists and is not empty")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    fails_cleanly(capsys, export.main, ["--checkpoint", str(exported["best"]), "--out", str(out / "keep.txt")],
                  "is a file")  # fmt: skip


def test_an_empty_out_is_used(exported, tmp_path: Path) -> None:
    (tmp_path / "hf").mkdir()
    assert export.main(["--checkpoint", str(exported["best"]), "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def _disk_full(folder: Path, block_size: int) -> None:
    (folder / "vocab.json").write_text("{")  # some files are there when the write fails
    raise OSError(28, "No space left on device", str(folder / "merges.txt"))


def _logits_differ(*args) -> None:
    raise UserError("the exported model's logits differ from the checkpoint's")


@pytest.mark.parametrize("step, failure, message", [
    ("write_tokenizer", _disk_full, "No space left on device"),
    ("verify", _logits_differ, "logits differ"),
])  # fmt: skip
def test_a_failure_half_way_leaves_no_out(capsys, exported, tmp_path: Path, monkeypatch, step, failure, message):
    monkeypatch.setattr(export, step, failure)
    out = tmp_path / "hf"
    fails_cleanly(capsys, export.main, ["--checkpoint", str(exported["best"]), "--out", str(out)], message)
    assert list(tmp_path.iterdir()) == []  # neither --out nor the temporary folder beside it


def test_a_real_process_has_help_and_no_traceback(tmp_path: Path) -> None:
    result = run_module("nanogpt_lib.export", "--help")
    assert result.returncode == 0 and "--checkpoint" in result.stdout and "float16" in result.stdout
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    result = run_module("nanogpt_lib.export", "--checkpoint", str(bad), "--out", str(tmp_path / "hf"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: checkpoint")
    assert not (tmp_path / "hf").exists()
