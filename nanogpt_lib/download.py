"""Fetch the course's tiny-shakespeare ``input.txt`` on a machine with internet, and check it.

    python -m nanogpt_lib.download --dest data/input.txt

The file is the one from Andrej Karpathy's char-rnn repository (1,115,394 bytes); its sha256 is checked
before it is written, atomically, so a failed or partial download never leaves a file behind.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .atomic import atomic_write
from .errors import UserError, run_cli

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
NUM_BYTES = 1_115_394


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(dest: str | Path, url: str = URL, timeout: float = 60.0) -> Path:
    dest = Path(dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as err:
        raise UserError(
            f"could not download {url} ({getattr(err, 'reason', err)}); without internet, copy the course's "
            f"input.txt to {dest} by hand (see data/README.md)"
        ) from None
    if sha256_of(data) != SHA256:
        raise UserError(
            f"the downloaded file ({len(data):,} bytes) is not the course's tiny-shakespeare "
            f"({NUM_BYTES:,} bytes, sha256 {SHA256[:12]}...); nothing was written"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, lambda fh: fh.write(data))
    except OSError as err:
        raise UserError(f"cannot write {dest}: {err.strerror or err}") from None
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nanogpt_lib.download", description="Download tiny-shakespeare input.txt and verify its sha256."
    )
    parser.add_argument("--dest", default="data/input.txt", help="where to write the file (default: data/input.txt)")
    parser.add_argument("--force", action="store_true", help="download even if a verified copy is already there")
    args = parser.parse_args(argv)
    dest = Path(args.dest)
    if dest.is_file() and not args.force and sha256_of(dest.read_bytes()) == SHA256:
        print(f"{dest} is already the course's file (sha256 verified)", file=sys.stderr)
        return 0
    download(dest)
    print(f"wrote {dest} ({NUM_BYTES:,} bytes, sha256 verified)", file=sys.stderr)
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
