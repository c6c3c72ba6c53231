"""nanogpt_lib: train a GPT-2 style model from scratch on tiny-shakespeare, and prove it.

Modules, each with one job: config (options), tokenizer (GPT-2 BPE), data (batches), model (GPT),
checkpoint (atomic save/load), evaluate (full-corpus loss), sample (generation), train (the loop and
its CLI), runlog (run-directory text files), device (hardware and precision).
"""

import os

# MKL may otherwise pick its thread count per call from the machine's load, which changes how matrix products are
# split and so their last-bit rounding: a resumed CPU run would then not reproduce the uninterrupted one exactly.
# Set before torch loads MKL (the entry points and notebooks import nanogpt_lib first); a user's setting wins.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

__version__ = "0.1.0"
