"""User-facing errors: one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped with Ctrl-C


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file, incompatible checkpoint).

    Entry points print ``error: <message>`` and exit with status 2 instead of showing a traceback; in a notebook,
    IPython shows the same one line (``_render_traceback_``), and papermill still stops at the cell.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"error: {self}"]


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run an entry point's ``main`` and turn a :class:`UserError`, or Ctrl-C, into one line on stderr."""
    try:
        return int(main(argv) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:  # its message, if any, says what was kept
        print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
