"""GPT-2 byte-pair encoding through tiktoken, and a cache of a file's token ids keyed by its hash."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .errors import UserError

ENCODING_NAME = "gpt2"
EOT_TOKEN = 50256  # <|endoftext|>


@functools.lru_cache(maxsize=1)
def get_tokenizer():
    """The GPT-2 BPE. tiktoken downloads its two files on first use and caches them in TIKTOKEN_CACHE_DIR."""
    import tiktoken

    try:
        return tiktoken.get_encoding(ENCODING_NAME)
    except Exception as err:  # tiktoken raises requests/urllib errors of many kinds when offline
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "<unset>")
        raise UserError(
            f"could not load the GPT-2 tokenizer ({type(err).__name__}). tiktoken downloads it on first use; "
            f"without internet, set TIKTOKEN_CACHE_DIR to a folder holding its cached files "
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
