"""The GPT model: size, initial loss, causality, weight tying, generation, and agreement with transformers."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from nanogpt_lib.model import GPT, model_config


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(model_config("tiny")).eval()


@pytest.fixture(scope="module")
def gpt2_124m() -> GPT:
    torch.manual_seed(0)
    return GPT(model_config("gpt2-124m"))


def test_gpt2_124m_has_gpt2_parameter_count(gpt2_124m: GPT) -> None:
    # OpenAI's GPT-2 small with the LM head tied to wte: 124,439,808 parameters.
    assert gpt2_124m.num_params() == 124_439_808
    cfg = gpt2_124m.config
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size) == (12, 12, 768, 1024, 50257)


def test_gpt2_124m_one_training_step(gpt2_124m: GPT) -> None:
    """Shapes of a real forward pass, loss at init near ln(vocab), and one AdamW step lowers that loss."""
    from nanogpt_lib.tokenizer import encode

    ids = torch.tensor([encode("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 8)[:64]])
    x, y = ids[:, :-1], ids[:, 1:]
    logits, _ = gpt2_124m(x)
    assert logits.shape == (1, 63, 50257)
    _, loss = gpt2_124m(x, y)
    assert abs(loss.item() - math.log(50257)) < 0.3
    opt = torch.optim.AdamW(gpt2_124m.parameters(), lr=1e-4, fused=True)
    loss.backward()
    opt.step()
    _, loss_after = gpt2_124m(x, y)
    assert loss_after.item() < loss.item()


def test_initial_loss_is_uniform_guess(course_file) -> None:
    from nanogpt_lib.data import Batches, Windows
    from nanogpt_lib.tokenizer import encode_file

    batches = Batches(encode_file(course_file), Windows(batch_size=8, seq_len=64, seed=0), "cpu")
    x, y = batches.next()
    with torch.no_grad():
        _, loss = tiny_model()(x, y)
    assert abs(loss.item() - math.log(50257)) < 0.1  # ln(50257) = 10.825


def test_gpt2_initialisation_scales_residual_projections() -> None:
    model = tiny_model()
    n_layer = model.config.n_layer
    proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h])
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h])
    assert abs(fc.std().item() - 0.02) < 0.002
    assert abs(proj.std().item() - 0.02 / math.sqrt(2 * n_layer)) < 0.002
    assert all(torch.count_nonzero(b.attn.c_attn.bias) == 0 for b in model.transformer.h)


def test_future_tokens_do_not_change_earlier_logits() -> None:
    model = tiny_model()
    x = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(1))
    changed = x.clone()
    changed[:, 12:] = torch.randint(0, 50257, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_lm_head_is_tied_to_token_embedding() -> None:
    model = tiny_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    x = torch.randint(0, 50257, (1, 8))
    _, loss = model(x, x)
    loss.backward()
    assert model.transformer.wte.weight.grad is not None
    # counted once: wte + wpe + the blocks + ln_f, with no V x C head matrix of its own
    c, cfg = model.config.n_embd, model.config
    block = 12 * c * c + 13 * c  # ln_1, attention (qkv, projection), ln_2, MLP (4x up, down), with biases
    assert model.num_params() == cfg.vocab_size * c + cfg.block_size * c + cfg.n_layer * block + 2 * c


def test_parameter_names_follow_gpt2() -> None:
    names = set(tiny_model().state_dict())
    for name in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
                 "transformer.h.1.mlp.c_proj.bias", "transformer.ln_f.weight", "lm_head.weight"):  # fmt: skip
        assert name in names


def test_same_logits_as_transformers_gpt2() -> None:
    pytest.importorskip("transformers")
    from nanogpt_lib.hf_compat import to_transformers

    model = tiny_model(seed=3)
    with torch.no_grad():  # non-zero biases and norms, so that every tensor's mapping is exercised
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)
    hf = to_transformers(model).eval()
    x = torch.randint(0, 50257, (2, 40), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf(x).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_a_variant_without_a_transformers_twin_is_refused_in_one_line() -> None:
    pytest.importorskip("transformers")
    from nanogpt_lib.errors import UserError
    from nanogpt_lib.hf_compat import to_transformers
    from nanogpt_lib.model import GPTConfig

    assert GPTConfig().transformers_twin() is None and model_config("tiny").transformers_twin() is None
    no_bias = dataclasses.replace(model_config("tiny"), bias=False)
    assert "biases" in no_bias.transformers_twin()
    with pytest.raises(UserError, match="no twin in transformers: .*biases"):
        to_transformers(GPT(no_bias))


def test_generate_is_deterministic_for_a_seed_and_respects_top_k() -> None:
    model = tiny_model()
    idx = torch.tensor([[464, 1110]])
    run = lambda seed, **kw: model.generate(
        idx, 12, temperature=1.0, generator=torch.Generator().manual_seed(seed), **kw
    )
    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))
    greedy = run(5, top_k=1)
    with torch.no_grad():
        first_logits, _ = model(idx)
    assert greedy[0, 2].item() == first_logits[0, -1].argmax().item()
    assert greedy.shape == (1, 14)


def test_overfits_one_batch_far_below_target() -> None:
    torch.manual_seed(0)
    model = GPT(model_config("tiny")).train()
    x = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(0))
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, fused=True)
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01


@pytest.mark.parametrize("prompt_len, new", [(5, 12), (250, 12)])  # the second slides past the 256-token context
def test_cached_generation_equals_recomputing_every_step(prompt_len: int, new: int) -> None:
    model = tiny_model(seed=4)
    idx = torch.randint(0, 50257, (2, prompt_len), generator=torch.Generator().manual_seed(8))
    cached = model.generate(idx, new, top_k=1)  # greedy: the tokens depend on the logits alone
    expected = idx
    with torch.no_grad():
        for _ in range(new):
            logits, _ = model(expected[:, -model.config.block_size :])
            expected = torch.cat((expected, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(cached, expected)
