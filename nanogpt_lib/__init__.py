"""nanogpt_lib: train a GPT-2 style model from scratch on tiny-shakespeare, and prove it.

Modules by role, each with one job, in reading order.
The training core: config (options), tokenizer (GPT-2 BPE), data (batches), model (GPT), device (hardware and
precision), train (the Trainer loop and its CLI), session (a training session: what it trains with and its step),
step (the pieces of a step), loop_state (the loop's resumable progress and its timers), stop_rules (when to measure
the full-corpus loss, and the one stop decision), resume (which last.pt a session starts from), records
(run_config.json and summary.json), events (the loop's callbacks), evaluate (full-corpus loss), distributed (several
processes under torchrun), rundir (the run directory's layout, and a run read back), runlog (its text files, each
writer beside its reader), checkpoint and checkpoint_writer (atomic saves, in the background), atomic (atomic file
writes), interrupts (Ctrl-C and SIGTERM), errors (one-line errors).
The course helpers: sample (generation and its CLI), report (README and results/ from a run directory), overview
(every run in results/ beside the runs of others), plots (the loss curve), notebook (notebook helpers), corpus_stats
and model_stats (figures the notebooks show), download (the course file), export (a checkpoint as a Hugging Face model
folder) and model_card (its README.md, with the run's numbers).
The tools: bench (speed against transformers), sweep (recipe trials), hf_compat (our weights in transformers' GPT-2),
space_load (the Space's app under a burst of requests).
"""

import os

# MKL may otherwise pick its thread count per call from the machine's load, which changes how matrix products are
# split and so their last-bit rounding: a resumed CPU run would then not reproduce the uninterrupted one exactly.
# Set before torch loads MKL (the entry points and notebooks import nanogpt_lib first); a user's setting wins.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

__version__ = "0.1.0"
