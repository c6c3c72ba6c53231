"""Ctrl-C and SIGTERM during training: finish the step, save, and stop; a second signal exits at once."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """A context manager turning SIGINT/SIGTERM into a flag that the training loop checks between steps.

    Inside the ``with`` block the first signal only sets :attr:`signal`; the loop then saves ``last.pt``
    and returns. A second signal ends the process immediately (``os._exit``): atomic checkpoint writes mean
    even that leaves the previous checkpoint intact. Outside the main thread (where Python cannot install
    handlers) it does nothing, and Ctrl-C raises KeyboardInterrupt as usual.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        # under torchrun: whether any process of the group got a signal during the last step (None: one process)
        self.group_asked: bool | None = None
        self._previous: dict[int, object] = {}

    @property
    def asked(self) -> bool:
        """Whether to stop after this step: in one process, as soon as a signal came; under torchrun, the group's
        decision of the step, so that every process stops after the same step."""
        return self.signal is not None if self.group_asked is None else self.group_asked

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signal).name if self.signal is not None else None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            os.write(2, f"\n{signal.Signals(signum).name} again: exiting at once.\n".encode())
            os._exit(128 + signum)
        self.signal = signum
        os.write(2, f"\n{signal.Signals(signum).name}: stopping after this step (again to exit at once).\n".encode())

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
