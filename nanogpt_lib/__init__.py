"""nanogpt_lib: train a GPT-2 style model from scratch on tiny-shakespeare, and prove it.

Modules, each with one job: config (options), tokenizer (GPT-2 BPE), data (batches), model (GPT),
checkpoint (atomic save/load), evaluate (full-corpus loss), sample (generation), train (the loop and
its CLI), runlog (run-directory text files), device (hardware and precision).
"""

__version__ = "0.1.0"
