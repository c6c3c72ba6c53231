"""``python -m nanogpt_lib STEP``: the ``nanogpt`` command (cli.py), where its script is not on the PATH."""

from .cli import cli

cli()
