"""The model card of an export (its README.md): metadata for the Hugging Face Hub, how to use the model, and the
training run's numbers from the run directory (``summary.json``, ``run_config.json``) and the checkpoint, with "not
available" wherever they do not say. ``export.py`` writes it beside the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .model import GPT
from .runlog import duration, stop_of

LOSS_CURVE = "loss_curve.png"  # the export's copy of the run's loss curve, which the card shows
NOT_AVAILABLE = "not available"
# The model card's table of the run sits between these two comments (invisible on the Hub), so that a reader of the
# exported folder alone, such as the Space's app, can show it without parsing the rest of the card.
SUMMARY_START = "<!-- training-summary:start -->"
SUMMARY_END = "<!-- training-summary:end -->"


def _int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int | float) and value == value else NOT_AVAILABLE


def _loss(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else NOT_AVAILABLE


def _recipe(tc: dict[str, Any]) -> str:
    """The optimizer, its peak rates, schedule and seed, in words."""
    if "lr" not in tc:
        return NOT_AVAILABLE
    recipe = f"AdamW, peak learning rate {tc['lr']:g}"
    if tc.get("optimizer") == "muon":
        recipe = f"Muon (peak learning rate {tc['muon_lr']:g}) for the hidden matrices, {recipe} for the rest"
    recipe += f", {tc.get('lr_schedule', 'constant')} schedule"
    if tc.get("warmup_steps"):
        recipe += f" after {tc['warmup_steps']} warm-up steps"
    return recipe + f", seed {tc.get('seed', NOT_AVAILABLE)}"


def _weights(ckpt: dict[str, Any]) -> str:
    """Which weights these are: their step, loss and why they were saved."""
    if not isinstance(ckpt.get("step"), int):
        return NOT_AVAILABLE
    weights = f"step {ckpt['step']:,}"
    if isinstance(ckpt.get("loss"), int | float):
        weights += f", loss {ckpt['loss']:.4f}"
    return weights + (f" ({ckpt['reason']})" if ckpt.get("reason") else "")


def summary_rows(ckpt: dict[str, Any], summary: dict[str, Any], run_config: dict[str, Any]) -> list[tuple[str, str]]:
    """The run's numbers as (what, value) rows; "not available" where the run directory does not say."""
    tc = {**run_config.get("train_config", {}), **run_config.get("plan", {})}  # the micro-batch this machine took
    source = run_config.get("input") or {}
    data = source.get("name") or (Path(tc["input_file"]).name if tc.get("input_file") else None)  # never the path
    corpus_tokens = run_config.get("tokens_in_corpus")
    details = [
        f"{corpus_tokens:,} tokens" if corpus_tokens else "",
        source.get("sha256") and f"sha256 {source['sha256']}",
    ]
    details = [detail for detail in details if detail]
    if data:
        data = f"`{data}`" + (f" ({', '.join(details)})" if details else "")
    steps = _int(summary.get("steps"))
    if summary.get("steps_requested") and steps != NOT_AVAILABLE:
        steps += f" (of at most {summary['steps_requested']:,})"
    tokens = _int(summary.get("tokens_seen"))
    if isinstance(summary.get("epochs"), int | float) and tokens != NOT_AVAILABLE:
        tokens += f" ({summary['epochs']:,.1f} passes over the data)"
    per_step = summary.get("tokens_per_step") or run_config.get("tokens_per_step")
    per_step = _int(per_step) if per_step else NOT_AVAILABLE
    if per_step != NOT_AVAILABLE and all(k in tc for k in ("batch_size", "seq_len", "grad_accum")):
        per_step += f" (batch {tc['batch_size']} × {tc['seq_len']} tokens × grad_accum {tc['grad_accum']})"
    corpus = _loss(summary.get("full_corpus_loss"))
    if corpus != NOT_AVAILABLE and summary.get("full_corpus_loss_step") is not None:
        corpus += f" (at step {summary['full_corpus_loss_step']:,}: every token of the corpus predicted once)"
    device = summary.get("device") or run_config.get("device_name")
    precision = summary.get("amp") or run_config.get("amp")
    precision = "fp32" if precision == "off" else precision
    hardware = f"{device}, {precision}" if device and precision else device or NOT_AVAILABLE
    recipe = _recipe(tc)
    status = summary.get("status")
    stop = stop_of(summary)
    if status == "target_reached" and stop and summary.get("target_loss") is not None:
        status = f"{status} ({stop['what']} ≤ {summary['target_loss']})"
    elif status and stop:
        status = f"{status} ({stop['what']})"
    weights = _weights(ckpt)
    return [
        ("data", data or NOT_AVAILABLE),
        ("optimizer steps", steps),
        ("tokens seen", tokens),
        ("tokens per step", per_step),
        ("training recipe", recipe),
        ("final step loss", _loss(summary.get("final_step_loss"))),
        ("full-corpus loss", corpus),
        ("hardware", hardware),
        ("wall time", duration(wall) if isinstance(wall := summary.get("wall_time_s"), int | float) else NOT_AVAILABLE),
        ("how the run ended", status or NOT_AVAILABLE),
        ("these weights", weights),
    ]


MODEL_CARD = """---
license: {license_id}
language:
- en
library_name: transformers
pipeline_tag: text-generation
tags:
- gpt2
- text-generation
- causal-lm
- shakespeare
- nanogpt
- trained-from-scratch
---

# {name}

A GPT-2 style language model trained from scratch with `nanogpt_lib`: {n_params} parameters,
{cfg.n_layer} layers, {cfg.n_head} attention heads, {cfg.n_embd} channels, a context of {cfg.block_size} tokens and
GPT-2's byte-pair encoding (50,257 tokens). The architecture is GPT-2's, so it loads as `GPT2LMHeadModel`; the
weights here are stored as {dtype}.{memorised}

## Use

```python
from transformers import pipeline

generator = pipeline("text-generation", model="path/to/this/folder")  # or the repository id on the Hub
out = generator({prompt}, max_new_tokens=200, do_sample=True, temperature=0.8, top_k=200)
print(out[0]["generated_text"])
```

`generation_config.json` holds the sampling settings of the run's own samples, so a plain `generate()` samples the
same way. The tokenizer is GPT-2's, unchanged: `<|endoftext|>` (id 50256) is its only special token.

## Training run

{SUMMARY_START}
| what | value |
| --- | --- |
{rows}{later}
{SUMMARY_END}

{curve}

Step loss: the mean cross-entropy (nats per token) over the tokens of one optimizer step. Full-corpus loss: the
model in eval mode over the whole training text, every token predicted once.{provenance}

## Limitations

The model knows only its training text (for the course, tiny-shakespeare: about a million characters of plays):
it continues prompts in that style and knows nothing else. What it writes is not reliable and is meant for study
and play only.
"""  # filled by model_card()


def _memorised_note(summary: dict[str, Any]) -> str:
    corpus_loss = summary.get("full_corpus_loss")
    if isinstance(corpus_loss, int | float) and corpus_loss < 0.5:
        return (
            "\n\nA loss this low means the model has memorised much of its training text: expect passages of it "
            "back, recombined, rather than new writing."
        )
    return ""


def _provenance(summary: dict[str, Any], run_config: dict[str, Any]) -> str:
    versions = run_config.get("versions", {})
    parts = [
        f"torch {versions['torch']}" if versions.get("torch") else "",
        f"code at commit `{run_config['git_commit']}`" if run_config.get("git_commit") else "",
        f"finished {summary['finished_at']}" if summary.get("finished_at") else "",
    ]
    parts = [part for part in parts if part]
    return f" Provenance: {', '.join(parts)}." if parts else ""


def _later_note(ckpt: dict[str, Any], summary: dict[str, Any]) -> str:
    if isinstance(ckpt.get("step"), int) and isinstance(summary.get("steps"), int) and ckpt["step"] > summary["steps"]:
        return (
            f"\n\nThe run's summary.json was written at step {summary['steps']:,} and these weights are from step "
            f"{ckpt['step']:,}: the run went on after it was written."
        )
    return ""


def model_card(
    name: str,
    model: GPT,
    ckpt: dict[str, Any],
    summary: dict[str, Any],
    run_config: dict[str, Any],
    dtype: str,
    license_id: str,
    has_curve: bool,
) -> str:
    """The model card (README.md of the export): metadata for the Hub, how to use it, the training run's numbers."""
    cfg, prompt = model.config, run_config.get("train_config", {}).get("prompt") or "BIANCA:\n"
    rows = "\n".join(f"| {what} | {value} |" for what, value in summary_rows(ckpt, summary, run_config))
    return MODEL_CARD.format(
        license_id=license_id, name=name, n_params=f"{model.num_params():,}", cfg=cfg, dtype=dtype,
        memorised=_memorised_note(summary), prompt=repr(prompt),
        SUMMARY_START=SUMMARY_START, SUMMARY_END=SUMMARY_END, rows=rows, later=_later_note(ckpt, summary),
        curve=f"![Training loss]({LOSS_CURVE})" if has_curve else "Loss curve: not available.",
        provenance=_provenance(summary, run_config),
    )  # fmt: skip
