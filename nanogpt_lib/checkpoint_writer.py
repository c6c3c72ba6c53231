"""Checkpoints written in the background, so that training does not wait for the disk.

``submit`` takes a snapshot of what is to be saved (every tensor copied to CPU memory, so the next optimizer
step cannot change it), then hands the files to a writer thread and returns. Each file is still written by
``checkpoint.save``: a temporary file renamed into place, so a crash at any moment leaves the previous file
intact. At most one batch of files is in flight: a second ``submit`` first waits for the one before.

An error in the writer (a full disk) is kept and raised in the training thread by the next ``raise_if_failed``,
``submit`` or ``wait``, as the same OSError a direct write would have raised.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import torch

from . import checkpoint


def _view_key(t: torch.Tensor) -> tuple:
    """Tensors with equal keys are the same view of the same memory (e.g. a tied weight under two names)."""
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def snapshot(value: Any, copies: dict[tuple, torch.Tensor] | None = None) -> Any:
    """A copy of ``value`` (nested dicts, lists and tuples) whose tensors are fresh CPU copies.

    A view of memory already copied gets the same copy (``copies`` remembers them): the weights shared by
    ``best.pt`` and ``last.pt``, and the token embedding that the output layer shares, are copied once and stay
    shared in the file.
    """
    copies = {} if copies is None else copies
    if isinstance(value, torch.Tensor):
        key = _view_key(value)
        if key not in copies:
            copies[key] = value.detach().to("cpu", copy=True)
        return copies[key]
    if isinstance(value, dict):
        return {k: snapshot(v, copies) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(v, copies) for v in value)
    return value


class CheckpointWriter:
    """Writes checkpoint files in one background thread, one batch of files at a time."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.write_seconds = 0.0  # time spent writing in the background, for the summary

    def submit(self, files: list[tuple[str | os.PathLike, dict[str, Any]]]) -> None:
        """Snapshot the payloads now; write each ``(path, payload)`` in the background, in order."""
        self.wait()
        copied: dict[tuple, torch.Tensor] = {}
        copies = [(path, snapshot(payload, copied)) for path, payload in files]
        self._thread = threading.Thread(target=self._write, args=(copies,), name="checkpoint-writer")
        self._thread.start()

    def _write(self, files: list[tuple[str | os.PathLike, dict[str, Any]]]) -> None:
        t0 = time.perf_counter()
        try:
            for path, payload in files:
                checkpoint.save(path, payload)
        except BaseException as err:  # kept for the training thread, which decides what to tell the user
            self._error = err
        finally:
            self.write_seconds += time.perf_counter() - t0

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Block until the write in flight (if any) is done; raise its error, if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.raise_if_failed()

    def close(self) -> None:
        """Wait for the write in flight, dropping its error: for a run that is already ending on another error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._error = None

    def raise_if_failed(self) -> None:
        """Raise the error of a finished write, once; do not wait for one in flight."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
