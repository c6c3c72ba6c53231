"""The bridge to Hugging Face ``transformers``: our weights in a ``GPT2LMHeadModel``.

Used by the tests (our logits must equal those of an independent implementation) and by the benchmark
(the same weights in both models). ``transformers`` is an optional dependency, imported only here.
"""

from __future__ import annotations

import torch

from .errors import UserError
from .model import GPT

# GPT-2 stores these Linear layers as Conv1D, whose weight is (in, out): the transpose of ours.
_CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def to_transformers(model: GPT):
    """A ``transformers.GPT2LMHeadModel`` with the same configuration and a copy of ``model``'s weights; a model
    variant without such a twin (``GPTConfig.transformers_twin``) is refused in one line."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = model.config
    why_not = cfg.transformers_twin()
    if why_not:
        raise UserError(f"this model has no twin in transformers: {why_not}")
    hf_config = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        activation_function="gelu_new",  # the tanh approximation, as ours
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
    )
    hf = GPT2LMHeadModel(hf_config)
    ours = model.state_dict()
    with torch.no_grad():
        for name, target in hf.state_dict().items():
            if name not in ours:
                continue  # buffers such as attention masks that our model computes instead of storing
            source = ours[name]
            if name.endswith(_CONV1D_SUFFIXES):
                source = source.t()
            target.copy_(source)
    return hf.to(next(model.parameters()).device)
