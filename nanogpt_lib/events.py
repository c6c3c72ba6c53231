"""How the training loop reports without knowing who watches: callbacks by event name.

Events: ``on_start(info)``, ``on_message(line)`` for every train.log line, ``on_log(row)`` for every metrics row,
``on_sample(step, texts)``, ``on_end(summary)``. The CLI prints lines and a tqdm bar; a notebook draws a live plot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

EVENTS = ("on_start", "on_message", "on_log", "on_sample", "on_end")


class Events:
    """The callbacks of each event; ``speaks`` says whether this process calls them (under torchrun one process,
    rank 0, speaks for the group)."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callable]] = {event: [] for event in EVENTS}
        self.speaks = True

    def add(self, event: str, fn: Callable) -> None:
        if event not in self.callbacks:
            raise ValueError(f"unknown event {event!r}; events are {', '.join(EVENTS)}")
        self.callbacks[event].append(fn)

    def emit(self, event: str, *args: Any) -> None:
        if self.speaks:
            for fn in self.callbacks[event]:
                fn(*args)
