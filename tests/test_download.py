"""The download helper verifies the course file before writing it (no network needed: urlopen is replaced)."""

from __future__ import annotations

import io
import urllib.error
from pathlib import Path

import pytest

from nanogpt_lib import download
from nanogpt_lib.errors import UserError


def serve(monkeypatch, payload: bytes | Exception) -> None:
    def fake_urlopen(url, timeout):
        if isinstance(payload, Exception):
            raise payload
        return io.BytesIO(payload)

    monkeypatch.setattr(download.urllib.request, "urlopen", fake_urlopen)


def test_writes_the_verified_course_file(monkeypatch, tmp_path: Path, course_file: Path) -> None:
    serve(monkeypatch, course_file.read_bytes())
    dest = download.download(tmp_path / "data" / "input.txt")
    assert dest.read_bytes() == course_file.read_bytes()


def test_refuses_a_different_file_and_writes_nothing(monkeypatch, tmp_path: Path) -> None:
    serve(monkeypatch, b"<html>rate limited</html>")
    with pytest.raises(UserError, match="not the course's tiny-shakespeare"):
        download.download(tmp_path / "input.txt")
    assert list(tmp_path.iterdir()) == []


def test_offline_says_where_to_copy_the_file(monkeypatch, tmp_path: Path) -> None:
    serve(monkeypatch, urllib.error.URLError("no route to host"))
    with pytest.raises(UserError, match="copy the course's input.txt"):
        download.download(tmp_path / "input.txt")
