"""A Gradio demo of an exported model: type a prompt, watch the model continue it token by token.

The model comes from the directory (or Hugging Face Hub repository id) named by the environment variable
MODEL_DIR, by default ``model/`` beside this file: a folder written by ``python -m nanogpt_lib.export``. It needs
only ``transformers``, ``torch`` and ``gradio``, so a Hugging Face Space runs it from the exported folder alone.

    MODEL_DIR=out/full-hf python space/app.py          # http://127.0.0.1:7860

GRADIO_SERVER_NAME and GRADIO_SERVER_PORT choose where it listens (127.0.0.1:7860 unless set; a Space sets them).
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

HERE = Path(__file__).resolve().parent
DEFAULT_PROMPT = "BIANCA:\n"
# Bounds of every input: the sliders enforce them in the page, generate() again for requests that bypass the page.
MAX_PROMPT_CHARS = 1000
MAX_NEW_TOKENS = 300
MAX_SAMPLES = 4
MAX_TEMPERATURE = 2.0
MAX_TOP_K = 1000
MAX_SEED = 2**32 - 1
CONCURRENT_REQUESTS = 2  # generations at once; further requests wait in the queue
QUEUE_SIZE = 16
# The exporter puts the run's numbers between these comments of the model card (README.md).
SUMMARY_START = "<!-- training-summary:start -->"
SUMMARY_END = "<!-- training-summary:end -->"
# The keyword of the key/value cache: ``cache`` in recent transformers, ``past_key_values`` before.
CACHE_ARG = "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # owner/name of a Hub repository


@dataclass
class Loaded:
    """The model and tokenizer of one exported folder, and what the page shows about its training run."""

    name: str
    model: GPT2LMHeadModel
    tokenizer: object
    summary: str
    loss_curve: str | None


def model_dir() -> str:
    return os.environ.get("MODEL_DIR") or str(HERE / "model")


def _exported_file(source: str, name: str) -> str | None:
    """A file of the export: from the local folder, or downloaded from the Hub repository; None where it has none."""
    if Path(source).is_dir():
        path = Path(source) / name
        return str(path) if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(source, name)
    except Exception:  # no such file in the repository, or the Hub cannot be reached: the page goes without it
        return None


def training_summary(card_path: str | None) -> str:
    """The model card's table of the training run (the whole card less its metadata when it has no such table)."""
    if card_path is None:
        return "The export has no model card: training numbers not available."
    card = Path(card_path).read_text(encoding="utf-8")
    if SUMMARY_START in card and SUMMARY_END in card:
        return card.split(SUMMARY_START, 1)[1].split(SUMMARY_END, 1)[0].strip()
    return re.sub(r"\A---\n.*?\n---\n", "", card, flags=re.DOTALL).strip()


def card_title(card_path: str | None) -> str | None:
    """The model card's first heading: the name of the run that trained the model."""
    if card_path is None:
        return None
    found = re.search(r"^# (.+)$", Path(card_path).read_text(encoding="utf-8"), flags=re.MULTILINE)
    return found.group(1).strip() if found else None


@functools.lru_cache(maxsize=1)
def load(source: str) -> Loaded:
    """Load an exported folder once per process; every request shares the model (read-only in inference)."""
    if not Path(source).is_dir() and not HUB_ID.fullmatch(source):
        raise SystemExit(
            f"MODEL_DIR={source} is neither a folder nor a Hub repository id (owner/name): "
            f"export a model first (python -m nanogpt_lib.export --checkpoint RUN/checkpoints/best.pt --out DIR)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = GPT2LMHeadModel.from_pretrained(source).eval()
    except (OSError, ValueError) as err:  # no such folder or repository, or not an exported model
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SystemExit(f"cannot load the model from MODEL_DIR={source}: {reason}") from None
    if model.dtype != torch.float32 and not torch.cuda.is_available():
        model = model.float()  # half precision is slow or unsupported on many CPUs; float32 is always right there
    card = _exported_file(source, "README.md")
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    name = (
        f"**{card_title(card) or Path(source).name}**: {params:,} parameters, {cfg.n_layer} layers, "
        f"{cfg.n_head} heads, {cfg.n_embd} channels, a context of {cfg.n_positions:,} tokens"
    )
    return Loaded(name, model, tokenizer, training_summary(card), _exported_file(source, "loss_curve.png"))


@torch.inference_mode()
def sample(
    model: GPT2LMHeadModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    num_samples: int,
    seed: int,
) -> Iterator[torch.Tensor]:
    """Yield the token ids (num_samples, T) after each new token. Temperature 0 picks the most likely token; top_k 0
    samples from every token. Keys and values are cached; past the context, the window slides and is recomputed."""
    window = model.config.n_positions
    generator = torch.Generator().manual_seed(seed)
    seq = torch.tensor([prompt_ids] * num_samples, dtype=torch.long)
    past = None
    for _ in range(max_new_tokens):
        if past is not None and seq.size(1) <= window:
            out = model(input_ids=seq[:, -1:], use_cache=True, **{CACHE_ARG: past})  # only the newest token
        else:
            out = model(input_ids=seq[:, -window:], use_cache=True)
        past = getattr(out, CACHE_ARG)
        logits = out.logits[:, -1, :].float()  # (num_samples, vocab)
        if temperature == 0:
            next_ids = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if 0 < top_k < logits.size(-1):
                kth_best = torch.topk(logits, top_k).values[:, [-1]]
                logits = logits.masked_fill(logits < kth_best, float("-inf"))
            next_ids = torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1, generator=generator)
        seq = torch.cat((seq, next_ids), dim=1)
        yield seq


def check_inputs(
    prompt: str | None, max_new_tokens, temperature, top_k, num_samples, seed
) -> tuple[str, int, float, int, int, int]:
    """The inputs as numbers of the right type, or ValueError with a message for the page."""

    def number(value, label: str, low: float, high: float, integer: bool):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{label} must be a number") from None
        if not low <= value <= high:  # also refuses NaN
            raise ValueError(f"{label} must be between {low:g} and {high:g}, got {value:g}")
        if integer and value != int(value):
            raise ValueError(f"{label} must be a whole number, got {value:g}")
        return int(value) if integer else value

    if prompt is None or not prompt.strip():
        raise ValueError("Type a prompt first: the model continues the text you give it.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"The prompt is {len(prompt):,} characters long; at most {MAX_PROMPT_CHARS:,} are allowed.")
    return (
        prompt,
        number(max_new_tokens, "Max new tokens", 1, MAX_NEW_TOKENS, True),
        number(temperature, "Temperature", 0, MAX_TEMPERATURE, False),
        number(top_k, "Top-k", 0, MAX_TOP_K, True),
        number(num_samples, "Samples", 1, MAX_SAMPLES, True),
        number(seed, "Seed", 0, MAX_SEED, True),
    )


def layout(texts: list[str]) -> str:
    if len(texts) == 1:
        return texts[0]
    return "\n\n".join(f"── sample {i + 1} of {len(texts)} ──\n{text}" for i, text in enumerate(texts))


def generate(prompt, max_new_tokens, temperature, top_k, num_samples, seed) -> Iterator[tuple[str, str]]:
    """The page's Generate: (generated text so far, message) after each token; a bad input gives only a message."""
    try:
        prompt, max_new_tokens, temperature, top_k, num_samples, seed = check_inputs(
            prompt, max_new_tokens, temperature, top_k, num_samples, seed
        )
    except ValueError as err:
        gr.Warning(str(err))
        yield "", f"⚠️ {err}"
        return
    loaded = load(model_dir())
    prompt_ids = loaded.tokenizer(prompt)["input_ids"]
    yield layout([prompt] * num_samples), "Generating…"
    for seq in sample(loaded.model, prompt_ids, max_new_tokens, temperature, top_k, num_samples, seed):
        texts = [prompt + loaded.tokenizer.decode(row[len(prompt_ids) :]) for row in seq.tolist()]
        yield layout(texts), "Generating…"
    yield layout(texts), f"Done: {max_new_tokens} new tokens per sample, seed {seed}."


def build_demo(loaded: Loaded) -> gr.Blocks:
    with gr.Blocks(title="A GPT trained from scratch") as demo:
        gr.Markdown(
            "# A GPT-2 style model, trained from scratch\n"
            f"Model {loaded.name}. It continues your prompt one token at a time; the same seed and settings give "
            "the same text."
        )
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(
                    value=DEFAULT_PROMPT, label=f"Prompt (at most {MAX_PROMPT_CHARS:,} characters)", lines=4,
                    max_lines=12, elem_id="prompt",
                )  # fmt: skip
                max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=200, step=1, label="Max new tokens")
                temperature = gr.Slider(
                    0, MAX_TEMPERATURE, value=0.8, step=0.05, label="Temperature (0: always the most likely token)"
                )
                top_k = gr.Slider(0, MAX_TOP_K, value=200, step=1, label="Top-k (0: all tokens)")
                num_samples = gr.Slider(1, MAX_SAMPLES, value=1, step=1, label="Samples")
                seed = gr.Number(value=1337, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", elem_id="stop")
            with gr.Column(scale=2):
                message = gr.Markdown("", elem_id="message")
                output = gr.Textbox(label="Generated text", lines=18, max_lines=40, elem_id="output")
        with gr.Accordion("The training run", open=True):
            gr.Markdown(loaded.summary, elem_id="summary")
            if loaded.loss_curve:
                gr.Image(loaded.loss_curve, label="Loss curve", interactive=False, elem_id="loss-curve")
        inputs = [prompt, max_new_tokens, temperature, top_k, num_samples, seed]
        event = run.click(generate, inputs=inputs, outputs=[output, message])
        stop.click(None, cancels=[event])
    demo.queue(default_concurrency_limit=CONCURRENT_REQUESTS, max_size=QUEUE_SIZE)
    return demo


def main() -> None:
    loaded = load(model_dir())
    demo = build_demo(loaded)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        show_error=False,
    )


if __name__ == "__main__":
    main()
