"""Run the training CLI with checkpoint writes slowed down, so that a test can kill it mid-write.

Each atomic write prints ``WRITING <name>`` and then sleeps between writing the temporary file and renaming
it into place: the window in which a crash must leave the previous file intact.
"""

import sys
import time

from nanogpt_lib import checkpoint
from nanogpt_lib.train import cli

DELAY_S = float(sys.argv.pop(1))
original = checkpoint.atomic_write


def slow_atomic_write(path, write):
    def slow(fh):
        write(fh)
        print(f"WRITING {path}", flush=True)
        time.sleep(DELAY_S)

    original(path, slow)


checkpoint.atomic_write = slow_atomic_write
if __name__ == "__main__":
    cli()
