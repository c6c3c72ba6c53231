"""A Gradio demo of an exported model: type a prompt, watch the model continue it token by token.

The model comes from the directory (or Hugging Face Hub repository id) named by the environment variable
MODEL_DIR, by default ``model/`` beside this file: a folder written by ``python -m nanogpt_lib.export``. It needs
only ``transformers``, ``torch`` and ``gradio``, so a Hugging Face Space runs it from the exported folder alone.

    MODEL_DIR=out/full-hf python space/app.py          # http://127.0.0.1:7860

GRADIO_SERVER_NAME and GRADIO_SERVER_PORT choose where it listens (127.0.0.1:7860 unless set; a Space sets them).

Requests that are in flight together are generated together: one thread owns the model and runs one forward pass
per token for all of their rows, and a request arriving meanwhile joins before the next token (continuous batching;
why, under "batched generation" below). Each page still sees its own text grow token by token, the same text as
when it runs alone (its own random generator, left padding with per-row positions).
"""

from __future__ import annotations

import functools
import inspect
import os
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel
from transformers.cache_utils import Cache, DynamicLayer

HERE = Path(__file__).resolve().parent
DEFAULT_PROMPT = "BIANCA:\n"
# Bounds of every input: the sliders enforce them in the page, generate() again for requests that bypass the page.
MAX_PROMPT_CHARS = 1000
MAX_NEW_TOKENS = 300
MAX_SAMPLES = 4
MAX_TEMPERATURE = 2.0
MAX_TOP_K = 1000
MAX_SEED = 2**32 - 1
# The bounds under load. A burst of 24 single-sample requests (8 readers pressing Generate 3 times) all run in one
# batch; the queue then holds 16 more and turns further ones away at once with Gradio's "Queue is full" message.
CONCURRENT_REQUESTS = 24  # requests handed to the batch at once (each holds one of Gradio's 40 worker threads)
QUEUE_SIZE = 16  # requests waiting for one of those places
# Rows (samples) generated together. A request that would pass it waits, in its place, for rows to end. It bounds the
# memory of the key/value cache: at most MAX_BATCH_ROWS x the model's context x 2 x layers x channels floats
# (2.4 GB for the 124M model's 12 x 768 at a context of 1,024, as left padding makes every row as long as the
# longest; 24 replies of 200 tokens to a short prompt use about 370 MB of it).
MAX_BATCH_ROWS = 32
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


def cpu_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a container's cgroup quota (cpu.max), which
    torch does not read. A container given 2 cores of a larger host (as a Space may be; not run on one here) would
    otherwise run a thread per host core, and every step would wait for the threads that are not scheduled."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):  # no cgroup v2 here: the affinity is all there is to go by
        pass
    return cores


def cpu_dtype() -> torch.dtype:
    """The precision the model runs in: float32, unless the environment variable SPACE_DTYPE says bfloat16.

    float32 gives a request the same text alone and in a batch (tests/test_space.py checks it). bfloat16 reads half
    the bytes of weights per token and is faster on a CPU that multiplies bf16 matrices natively (Intel AMX,
    AVX512-BF16), but on such a CPU the matrix kernel was seen to change with the number of rows (from about two dozen
    on), so a request's text may change with who else is in the batch; a CPU without bf16 units only emulates it,
    which should be slower. Half-precision exports are made float32 too."""
    asked = os.environ.get("SPACE_DTYPE", "float32")
    if asked not in ("float32", "bfloat16"):
        raise SystemExit(f"SPACE_DTYPE must be float32 or bfloat16, got {asked!r}")
    return getattr(torch, asked)


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
    dtype = cpu_dtype()
    model = model.to(dtype)
    torch.set_num_threads(min(torch.get_num_threads(), cpu_cores()))
    card = _exported_file(source, "README.md")
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    name = (
        f"**{card_title(card) or Path(source).name}**: {params:,} parameters, {cfg.n_layer} layers, "
        f"{cfg.n_head} heads, {cfg.n_embd} channels, a context of {cfg.n_positions:,} tokens; computed in "
        f"{str(dtype).removeprefix('torch.')} on {torch.get_num_threads()} CPU thread(s)"
    )
    return Loaded(name, model, tokenizer, training_summary(card), _exported_file(source, "loss_curve.png"))


# ---------------------------------------------------------------------- batched generation
# A CPU's cost per token is reading the weights; a batch reads them once for all its rows. Gradio's own batching
# (batch=True) refuses generator functions, which streaming needs, so one background thread owns the model and
# generates for every request at once; each request's generator hands it a Job and reads its tokens from the Job's
# queue. Requests join between two tokens (continuous batching): a burst reaches the app over a second or more, and a
# request arriving just after a batch began would otherwise wait for that whole batch to end.


@dataclass(eq=False)
class Job:
    """One request: its rows (one per sample), its settings, its own random generator (so its text does not depend
    on who else is in the batch) and the queue its page reads each new ``seq`` from."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float
    top_k: int
    num_samples: int
    seed: int
    updates: queue.SimpleQueue | None = None
    cancelled: bool = False  # set by the page's generator when it stops; the rows leave at the next token

    def __post_init__(self) -> None:
        self.seq = torch.tensor([self.prompt_ids] * self.num_samples, dtype=torch.long)  # (num_samples, T)
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def finished(self) -> bool:
        return self.seq.size(1) - len(self.prompt_ids) >= self.max_new_tokens


def pick(logits: torch.Tensor, jobs: list[Job]) -> torch.Tensor:
    """The next token of every row (rows, 1), the rows of ``jobs`` in order. Temperature 0 takes the most likely
    token. Otherwise each job draws from its own rows with its own generator, exactly as it would alone: with a
    top-k, among its k best tokens only (the same distribution as masking the others out, and a draw of k random
    numbers instead of one per token of the vocabulary: a generator draws one at a time, on one core)."""
    next_ids, row = torch.empty((logits.size(0), 1), dtype=torch.long), 0
    for job in jobs:
        rows = slice(row, row + job.num_samples)
        row += job.num_samples
        if job.temperature == 0:
            next_ids[rows] = logits[rows].argmax(dim=-1, keepdim=True)
            continue
        candidates, ids = logits[rows], None
        if 0 < job.top_k < logits.size(-1):
            candidates, ids = torch.topk(candidates, job.top_k)
        drawn = torch.multinomial(torch.softmax(candidates / job.temperature, dim=-1), 1, generator=job.generator)
        next_ids[rows] = drawn if ids is None else ids.gather(1, drawn)
    return next_ids


def _layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (keys, values) of each layer, each (rows, heads, columns, head size)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def _aligned(parts: list[torch.Tensor], columns: int, capacity: int) -> torch.Tensor:
    """The parts (rows, heads, their columns, head size) stacked by rows in one buffer of ``capacity`` columns, each
    ending at column ``columns``: zeros pad it on the left (the attention mask hides them), room follows."""
    first = parts[0]
    buffer = first.new_zeros((sum(p.size(0) for p in parts), first.size(1), capacity, first.size(3)))
    row = 0
    for part in parts:
        buffer[row : row + part.size(0), :, columns - part.size(2) : columns] = part
        row += part.size(0)
    return buffer


class _Columns(DynamicLayer):
    """One layer's keys and values in buffers with room for the columns still to come. transformers' DynamicLayer
    concatenates, copying the whole cache at every token (a third of a step's time for 24 rows at 100 tokens on
    one core, measured); here a new column is written in place and the attention reads a view of the buffer."""

    def __init__(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, length: int):
        super().__init__()
        self.key_buffer, self.value_buffer, self.length, self.is_initialized = key_buffer, value_buffer, length, True
        self.keys, self.values = key_buffer[:, :, :length], value_buffer[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.size(2)
        if end > self.key_buffer.size(2):  # more columns than foreseen: twice the room
            capacity = max(end, 2 * self.key_buffer.size(2))
            self.key_buffer = _aligned([self.keys], self.length, capacity)
            self.value_buffer = _aligned([self.values], self.length, capacity)
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, : self.length], self.value_buffer[:, :, : self.length]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


class Batch:
    """The requests being generated together. Rows are left-padded: every row's cached tokens end at the cache's
    last column, so one new column serves all rows; an attention mask hides the padding and explicit position ids
    count each row from its own first token. A row past the model's context leaves the cache and has its last
    ``window`` tokens recomputed each step, as alone (those rows share one forward of their own, all being
    ``window`` long). Invariant between steps: a cached job's cache holds all of its ``seq`` but the last token."""

    def __init__(self, model: GPT2LMHeadModel):
        self.model = model
        self.window = model.config.n_positions
        self.cached: list[Job] = []  # in the cache's row order
        self.cache = None
        self.sliding: list[Job] = []

    @property
    def jobs(self) -> list[Job]:
        return self.cached + self.sliding

    @property
    def rows(self) -> int:
        return sum(job.num_samples for job in self.jobs)

    @torch.inference_mode()
    def step(self, joining: list[Job]) -> None:
        """One new token for every job, ``joining`` ones included (their prompts are read first); then jobs that are
        done or cancelled leave, and each job's queue gets its ``seq``."""
        self.sliding = [job for job in self.sliding if not job.cancelled]
        self._retain([job for job in self.cached if not job.cancelled])
        joining = [job for job in joining if not job.cancelled]
        order, logits = self.cached + joining + self.sliding, []
        if self.cached:
            logits.append(self._decode())
        if joining:
            logits.append(self._prefill(joining))
        if self.sliding:
            ids = torch.cat([job.seq[:, -self.window :] for job in self.sliding])
            logits.append(self.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1])
        next_ids = pick(torch.cat(logits).float(), order).split([job.num_samples for job in order])
        for job, new in zip(order, next_ids, strict=True):
            job.seq = torch.cat((job.seq, new), dim=1)
            if job.updates is not None:
                job.updates.put(job.seq)
        past = [job for job in self.cached if job.seq.size(1) > self.window and not job.finished]
        self.sliding = [job for job in self.sliding if not job.finished] + past
        self._retain([job for job in self.cached if job.seq.size(1) <= self.window and not job.finished])

    def _decode(self) -> torch.Tensor:
        """The logits after each cached row's newest token, one forward for all rows."""
        columns = self.cache.get_seq_length()
        cached = torch.tensor([job.seq.size(1) - 1 for job in self.cached])
        cached = cached.repeat_interleave(torch.tensor([job.num_samples for job in self.cached]))
        mask = torch.arange(columns + 1)[None, :] >= (columns - cached)[:, None]
        out = self.model(
            input_ids=torch.cat([job.seq[:, -1:] for job in self.cached]), attention_mask=mask.long(),
            position_ids=cached[:, None], use_cache=True, logits_to_keep=1, **{CACHE_ARG: self.cache},
        )  # fmt: skip
        self.cache = getattr(out, CACHE_ARG)
        return out.logits[:, -1]

    def _prefill(self, joining: list[Job]) -> torch.Tensor:
        """Read the prompts of the joining jobs (left-padded to the longest, at most ``window``), add their rows to
        the cache, and return the logits after each prompt."""
        prompts = [row[-self.window :] for job in joining for row in job.seq.tolist()]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        parts = [([k], [v]) for k, v in _layers(getattr(out, CACHE_ARG))]
        if self.cache is not None:
            parts = [
                ([k, *keys], [v, *values]) for (k, v), (keys, values) in zip(_layers(self.cache), parts, strict=True)
            ]
        self.cached += joining
        self._store(parts, max(part.size(2) for part in parts[0][0]))
        return out.logits[:, -1]

    def _retain(self, keep: list[Job]) -> None:
        """Keep only the cache rows of ``keep`` (a subsequence of ``self.cached``), and only the columns they use."""
        if keep == self.cached:
            return
        runs, row = [], 0  # the rows of each kept job
        for job in self.cached:
            if job in keep:
                runs.append((row, row + job.num_samples))
            row += job.num_samples
        self.cached = keep
        if not keep:
            self.cache = None
            return
        columns = max(job.seq.size(1) - 1 for job in keep)
        self._store([([k[a:b, :, -columns:] for a, b in runs], [v[a:b, :, -columns:] for a, b in runs])
                     for k, v in _layers(self.cache)], columns)  # fmt: skip

    def _store(self, parts: list[tuple[list[torch.Tensor], list[torch.Tensor]]], columns: int) -> None:
        """A cache of ``columns`` from each layer's parts (keys, values; rows of ``self.cached`` in order), with
        room for the tokens still to come (never past the window: a longer row leaves for the sliding ones)."""
        remaining = max(job.max_new_tokens - (job.seq.size(1) - len(job.prompt_ids)) for job in self.cached)
        capacity = max(columns, min(self.window, columns + remaining))
        layers = [
            _Columns(_aligned(keys, columns, capacity), _aligned(values, columns, capacity), columns)
            for keys, values in parts
        ]
        self.cache = Cache(layers=layers)


class Scheduler:
    """The one thread that owns the model: between two tokens it lets waiting requests join the batch (first come,
    first served, while the batch has fewer than MAX_BATCH_ROWS rows), then generates one token for all of them."""

    def __init__(self, model: GPT2LMHeadModel):
        self.model = model
        self.inbox: queue.SimpleQueue[Job] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="generation", daemon=True).start()

    def submit(self, job: Job) -> Job:
        job.updates = queue.SimpleQueue()
        self.inbox.put(job)
        return job

    def _run(self) -> None:
        batch, waiting = Batch(self.model), []
        while True:
            if not batch.jobs and not waiting:
                waiting.append(self.inbox.get())  # idle until a request comes
            while not self.inbox.empty():
                waiting.append(self.inbox.get())
            waiting, joining, rows = [job for job in waiting if not job.cancelled], [], batch.rows
            while waiting and (not rows or rows + waiting[0].num_samples <= MAX_BATCH_ROWS):
                rows += waiting[0].num_samples
                joining.append(waiting.pop(0))
            try:
                batch.step(joining)
            except Exception as err:  # every page in the batch hears of it, instead of waiting for ever
                for job in batch.jobs + joining:
                    job.updates.put(err)
                batch = Batch(self.model)


@functools.lru_cache(maxsize=1)
def scheduler(source: str) -> Scheduler:
    """The process's one scheduler, started on first use."""
    return Scheduler(load(source).model)


def sample(
    model: GPT2LMHeadModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    num_samples: int,
    seed: int,
) -> Iterator[torch.Tensor]:
    """Yield the token ids (num_samples, T) after each new token of one request alone: a batch of one, through the
    same steps the app's batch takes. Temperature 0 picks the most likely token; top_k 0 samples from every token."""
    job, batch = Job(prompt_ids, max_new_tokens, temperature, top_k, num_samples, seed), Batch(model)
    joining = [job]
    while not job.finished:
        batch.step(joining)
        joining = []
        yield job.seq


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
    job = scheduler(model_dir()).submit(Job(prompt_ids, max_new_tokens, temperature, top_k, num_samples, seed))
    try:
        for _ in range(max_new_tokens):
            seq = job.updates.get()
            if isinstance(seq, Exception):
                raise RuntimeError(f"generation failed: {seq}") from seq
            texts = [prompt + loaded.tokenizer.decode(row[len(prompt_ids) :]) for row in seq.tolist()]
            yield layout(texts), "Generating…"
    finally:  # done, or the page pressed Stop or left (Gradio closes this generator): the rows leave the batch
        job.cancelled = True
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
