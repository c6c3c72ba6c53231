"""Facts about a GPT model: parameters by module, FLOPs per token, training memory, shapes of a forward pass."""

from __future__ import annotations

import pandas as pd
import torch
from matplotlib.figure import Figure

from .model import GPT, GPTConfig


def parameter_table(model: GPT, depth: int = 3):
    """Parameters per module, named to ``depth`` parts (``transformer.h.0``); rows sum to the model's total.

    ``named_parameters()`` yields the tied wte / lm_head matrix once, under ``transformer.wte``.
    """

    groups: dict[str, int] = {}
    for name, p in model.named_parameters():
        key = ".".join(name.split(".")[:-1][:depth])
        groups[key] = groups.get(key, 0) + p.numel()
    table = pd.DataFrame({"parameters": groups}).rename_axis("module")
    table["share %"] = (100 * table["parameters"] / table["parameters"].sum()).round(2)
    return table


def block_parameter_table(model: GPT, block: int = 0):
    """One Transformer block's parameters, tensor by tensor, with shapes."""

    prefix = f"transformer.h.{block}."
    rows = [
        (n.removeprefix(prefix), tuple(p.shape), p.numel()) for n, p in model.named_parameters() if n.startswith(prefix)
    ]
    return pd.DataFrame(rows, columns=["tensor", "shape", "parameters"]).set_index("tensor")


def flops_per_token(config: GPTConfig, seq_len: int) -> dict[str, float]:
    """Training FLOPs per token: 6 per weight used in a matmul, plus the attention scores (PaLM appendix B)."""
    matmul_params = (
        config.n_layer * 12 * config.n_embd**2  # c_attn (3C^2) + attn c_proj (C^2) + MLP (8C^2) per block
        + config.vocab_size * config.n_embd  # LM head (tied to wte)
    )
    attention = 12 * config.n_layer * config.n_embd * seq_len  # QK^T and AV, forward and backward
    return {
        "matmul weights": matmul_params,
        "6 x weights (GFLOP/token)": 6 * matmul_params / 1e9,
        "attention (GFLOP/token)": attention / 1e9,
        "total (GFLOP/token)": (6 * matmul_params + attention) / 1e9,
    }


def memory_table(n_params: int):
    """Memory of weights, gradients and AdamW's two moments, in GB, stored in fp32 or in bf16."""

    rows = {"weights": 1, "gradients": 1, "AdamW exp_avg + exp_avg_sq": 2}
    table = pd.DataFrame(
        {
            "tensors per parameter": rows,
            "fp32 (GB)": {k: round(v * 4 * n_params / 1e9, 3) for k, v in rows.items()},
            "bf16 (GB)": {k: round(v * 2 * n_params / 1e9, 3) for k, v in rows.items()},
        }
    )
    table.loc["total"] = table.sum()
    return table


@torch.no_grad()
def forward_shapes(model: GPT, idx: torch.Tensor):
    """The output shape of each top-level step of a forward pass (first block only, the others are alike)."""

    wanted = {
        "transformer.wte": "token embedding",
        "transformer.wpe": "position embedding",
        "transformer.h.0.ln_1": "block 0: LayerNorm",
        "transformer.h.0.attn.c_attn": "block 0: q, k, v projection",
        "transformer.h.0.attn": "block 0: attention output",
        "transformer.h.0.mlp.c_fc": "block 0: MLP up-projection",
        "transformer.h.0.mlp": "block 0: MLP output",
        "transformer.h.0": "block 0 output (residual stream)",
        "transformer.ln_f": "final LayerNorm",
        "lm_head": "logits",
    }
    rows, hooks = [], []
    modules = dict(model.named_modules())
    for name, label in wanted.items():
        hooks.append(
            modules[name].register_forward_hook(
                lambda _m, _i, out, name=name, label=label: rows.append((name, label, tuple(out.shape)))
            )
        )
    try:
        model(idx)
    finally:
        for h in hooks:
            h.remove()
    return pd.DataFrame(rows, columns=["module", "what", "shape"]).set_index("module")


def causal_mask_figure(size: int = 12):
    """The causal mask: position t may attend to positions 0..t only."""

    mask = torch.tril(torch.ones(size, size))
    fig = Figure(figsize=(3.6, 3.6))
    ax = fig.subplots()
    ax.imshow(mask, cmap="Blues", vmin=0, vmax=1.3)
    ax.set_xlabel("key position (attended to)")
    ax.set_ylabel("query position")
    ax.set_title("causal mask (blue: allowed)", fontsize=10)
    fig.tight_layout()
    return fig
