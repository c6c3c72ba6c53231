"""A GPT-2 style decoder-only Transformer, in one file that reads top to bottom.

Parameter names follow OpenAI's GPT-2 checkpoint as Hugging Face ``transformers`` spells them
(``transformer.wte``, ``transformer.h.N.attn.c_attn``, ...), so weights map one-to-one onto
``GPT2LMHeadModel``; the only difference is that our Linear layers store ``(out, in)`` matrices where
GPT-2's Conv1D stores ``(in, out)``.

Shapes in comments: B batch, T time (sequence), C channels (n_embd), H heads, D head size, V vocab.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UserError


@dataclass(frozen=True)
class GPTConfig:
    """The model's shape and its variants, as data: what a checkpoint stores (``model_config``) to rebuild it.

    A variant is a field here, read by the modules below, with ``transformers_twin`` saying whether
    ``transformers.GPT2LMHeadModel`` can hold the same model (the export, the bench, the parity test and so the
    Space ask it). A field added later needs a default that gives the model older checkpoints describe.
    """

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024  # longest context the position table covers
    vocab_size: int = 50257  # GPT-2 BPE, not padded: the parameter count matches GPT-2's 124,439,808
    dropout: float = 0.0
    bias: bool = True  # GPT-2 has biases in every Linear and LayerNorm

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise UserError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    def transformers_twin(self) -> str | None:
        """None when ``transformers.GPT2LMHeadModel`` holds this model exactly (same weights, same logits), else
        why not. GPT-2 has biases in every Linear and LayerNorm and learned absolute positions."""
        if not self.bias:
            return "GPT-2 in transformers has biases in every Linear and LayerNorm, and this model has none"
        return None


PRESETS: dict[str, GPTConfig] = {
    # GPT-2 small, as released by OpenAI: 124,439,808 parameters with the LM head tied to wte.
    "gpt2-124m": GPTConfig(),
    # A model of the same architecture that trains in seconds on a CPU: for tests and quick checks.
    "tiny": GPTConfig(n_layer=2, n_head=4, n_embd=128, block_size=256),
}


def model_config(preset: str, dropout: float = 0.0) -> GPTConfig:
    """The configuration of a preset (``--model``), with ``dropout``."""
    if preset not in PRESETS:
        raise UserError(f"unknown model preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[preset], dropout=dropout)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.residual_projection = True  # scaled at init, see GPT._init_weights
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        causal = True
        if cache is not None:  # generation: keep keys and values, so each new token costs one position
            if "k" in cache:
                assert T == 1, "after the first pass, a cache takes one new token at a time"
                k, v = torch.cat((cache["k"], k), dim=2), torch.cat((cache["v"], v), dim=2)  # (B, H, S, D)
                causal = False  # the one new token may see every cached position
            cache["k"], cache["v"] = k, v
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU is the tanh approximation
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings (V, C)
                wpe=nn.Embedding(config.block_size, config.n_embd),  # position embeddings (block_size, C)
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the output layer reads logits off the token embedding matrix (GPT-2 does this too).
        self.lm_head.weight = self.transformer.wte.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A fresh GPT-2 initialisation of every weight (the sweep starts each trial on the same model this way)."""
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2 initialisation: N(0, 0.02) everywhere, except the projections that write into the residual
        # stream, scaled by 1/sqrt(2 * n_layer) so the stream's variance does not grow with depth.
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_projection", False):
                std /= math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """Trainable parameters, counting the tied wte/lm_head matrix once (GPT-2 small: 124,439,808)."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) for token ids ``idx`` (B, T); with ``targets`` (B, T), also the mean cross-entropy."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than the context of {self.config.block_size}")
        x = self._hidden(idx)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(B * T, -1).float(), targets.reshape(B * T))
        return logits, loss

    def _hidden(self, idx: torch.Tensor, start: int = 0, caches: list[dict] | None = None) -> torch.Tensor:
        """The final hidden states (B, T, C) of tokens ``idx`` (B, T) standing at positions start .. start+T-1."""
        pos = torch.arange(start, start + idx.size(1), device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if caches is None else caches[i])
        return self.transformer.ln_f(x)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend ``idx`` (B, T) by ``max_new_tokens`` sampled tokens; ``top_k`` 0 samples from all tokens.

        Keys and values are cached, so each new token costs one position. Past ``block_size`` tokens the window
        slides, every position moves, and the context is recomputed in full for each token.
        """
        caches = None
        for _ in range(max_new_tokens):
            if caches is None or idx.size(1) > self.config.block_size:
                caches = [{} for _ in self.transformer.h]
                hidden = self._hidden(idx[:, -self.config.block_size :], 0, caches)  # at most block_size tokens
            else:
                hidden = self._hidden(idx[:, -1:], idx.size(1) - 1, caches)  # only the newest token
            logits = self.lm_head(hidden[:, -1, :]).float() / temperature  # (B, V): only the last position predicts
            if 0 < top_k < logits.size(-1):
                kth_best = torch.topk(logits, top_k).values[:, [-1]]  # (B, 1)
                logits = logits.masked_fill(logits < kth_best, float("-inf"))
            probs = F.softmax(logits, dim=-1)
            next_id = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, next_id), dim=1)
        return idx
