"""Facts about the training text and its tokens, for the tokenization notebook."""

from __future__ import annotations

import collections

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .tokenizer import decode, get_tokenizer


def text_stats(text: str) -> dict[str, int]:
    return {
        "bytes (UTF-8)": len(text.encode("utf-8")),
        "characters": len(text),
        "lines": text.count("\n"),
        "distinct characters": len(set(text)),
    }


def token_stats(text: str, ids: np.ndarray) -> dict[str, float | int | bool]:
    return {
        "tokens": len(ids),
        "distinct tokens": len(np.unique(ids)),
        "vocabulary size": get_tokenizer().n_vocab,
        "characters per token": round(len(text) / len(ids), 3),
        "decode(encode(text)) == text": decode(ids.tolist()) == text,
    }


def example_tokens(ids: np.ndarray, start: int = 0, count: int = 16):
    """A table of consecutive tokens: position, id, and the text each one stands for."""

    window = ids[start : start + count].tolist()
    return pd.DataFrame(
        {"position": range(start, start + len(window)), "id": window, "text": [repr(decode([i])) for i in window]}
    ).set_index("position")


def most_common_tokens(ids: np.ndarray, count: int = 20):
    counts = collections.Counter(ids.tolist()).most_common(count)
    total = len(ids)
    return pd.DataFrame(
        {
            "text": [repr(decode([i])) for i, _ in counts],
            "id": [i for i, _ in counts],
            "count": [c for _, c in counts],
            "share %": [round(100 * c / total, 2) for _, c in counts],
        },
        index=pd.RangeIndex(1, len(counts) + 1, name="rank"),
    )


def frequency_figure(ids: np.ndarray):
    """Rank-frequency plot of the tokens (log-log): a few tokens are very common, most are rare."""

    counts = np.sort(np.bincount(ids.astype(np.int64)))[::-1]
    counts = counts[counts > 0]
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    ax.loglog(np.arange(1, len(counts) + 1), counts, lw=1.5)
    ax.set_xlabel("token rank")
    ax.set_ylabel("occurrences in input.txt")
    ax.set_title(f"{len(counts):,} distinct GPT-2 tokens in {len(ids):,}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def batch_arithmetic(num_tokens: int, batch_size: int, seq_len: int, grad_accum: int) -> dict[str, float | int]:
    """Tokens per optimizer step, and how many steps make one pseudo-epoch (as many tokens as the corpus)."""
    per_step = batch_size * seq_len * grad_accum
    return {
        "tokens per micro-batch (batch_size x seq_len)": batch_size * seq_len,
        "tokens per optimizer step (x grad_accum)": per_step,
        "steps per pseudo-epoch": round(num_tokens / per_step, 1),
    }


def shifted_pair_table(x, y, count: int = 10):
    """Inputs and targets of one training window side by side: each target is the next input token."""

    xs, ys = x[:count].tolist(), y[:count].tolist()
    return pd.DataFrame(
        {
            "input id": xs,
            "input text": [repr(decode([i])) for i in xs],
            "target id": ys,
            "target text (next token)": [repr(decode([i])) for i in ys],
        }
    ).rename_axis("t")
