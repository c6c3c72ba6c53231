"""nanogpt_lib: train a GPT-2 style model from scratch on tiny-shakespeare, and prove it.

Modules, each with one job, in reading order: config (options), tokenizer (GPT-2 BPE), data (batches),
model (GPT), device (hardware and precision), train (the loop and its CLI), evaluate (full-corpus loss),
sample (generation and its CLI), checkpoint (atomic save/load), checkpoint_writer (saving in the background),
atomic (atomic file writes), runlog (run-directory text files), interrupts (Ctrl-C and SIGTERM), errors (one-line
errors), download (the course file), report (README and results/ from a run directory), notebook (notebook
helpers), corpus_stats and model_stats (figures the notebooks show), hf_compat (weights to and from transformers),
bench (speed against transformers), sweep (recipe trials).
"""

import os

# MKL may otherwise pick its thread count per call from the machine's load, which changes how matrix products are
# split and so their last-bit rounding: a resumed CPU run would then not reproduce the uninterrupted one exactly.
# Set before torch loads MKL (the entry points and notebooks import nanogpt_lib first); a user's setting wins.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

__version__ = "0.1.0"
