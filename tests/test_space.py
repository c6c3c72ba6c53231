"""The Gradio Space: its generator in-process, then the real app in headless Chromium, driven as a person would."""

from __future__ import annotations

import ast
import base64
import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from .conftest import ROOT
from .tiny_export import export_run, train_tiny

gr = pytest.importorskip("gradio", reason="gradio is a test dependency (pip install -r requirements-dev.txt)")
transformers = pytest.importorskip("transformers")

from nanogpt_lib import space_load  # noqa: E402  (it needs gradio_client, which comes with gradio)

SPACE = ROOT / "space"
PROMPT = "ROMEO:"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The tiny model's export; SPACE_TEST_MODEL_DIR names another exported folder to use instead (for a screenshot
    of a trained model)."""
    if os.environ.get("SPACE_TEST_MODEL_DIR"):
        return Path(os.environ["SPACE_TEST_MODEL_DIR"])
    folder = tmp_path_factory.mktemp("space")
    return export_run(train_tiny(folder), folder / "hf")


@pytest.fixture(scope="module")
def app(model_dir: Path):
    """space/app.py imported as a module, reading the model from ``model_dir``."""
    spec = importlib.util.spec_from_file_location("space_app", SPACE / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    previous = os.environ.get("MODEL_DIR")
    os.environ["MODEL_DIR"] = str(model_dir)
    yield module
    del sys.modules[spec.name]
    if previous is None:
        del os.environ["MODEL_DIR"]
    else:
        os.environ["MODEL_DIR"] = previous


# ---------------------------------------------------------------------- in-process


def test_generate_streams_one_update_per_token_and_ends_with_greedy_text(app, model_dir: Path) -> None:
    updates = list(app.generate(PROMPT, 15, 0, 0, 1, 7))  # temperature 0: the most likely token each time
    assert len(updates) == 1 + 15 + 1  # the prompt, one update per new token, the final message
    assert updates[0] == (PROMPT, "Generating…") and updates[-1][1].startswith("Done: 15 new tokens")
    hf = transformers.GPT2LMHeadModel.from_pretrained(model_dir).float().eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    greedy = hf.generate(ids, max_new_tokens=15, do_sample=False, attention_mask=torch.ones_like(ids))
    assert updates[-1][0] == PROMPT + tokenizer.decode(greedy[0, ids.size(1) :])
    assert app.load(str(model_dir)) is app.load(str(model_dir))  # loaded once per process


def test_samples_are_reproducible_for_a_seed(app) -> None:
    final = lambda seed: list(app.generate(PROMPT, 10, 1.0, 50, 2, seed))[-2][0]  # noqa: E731
    text = final(3)
    assert text == final(3) and text != final(4)
    assert text.startswith(f"── sample 1 of 2 ──\n{PROMPT}") and f"── sample 2 of 2 ──\n{PROMPT}" in text


def test_the_context_window_slides_past_the_model_context(app) -> None:
    loaded = app.load(os.environ["MODEL_DIR"])
    window = loaded.model.config.n_positions
    prompt_ids = loaded.tokenizer(PROMPT)["input_ids"]
    steps = list(app.sample(loaded.model, prompt_ids, window + 5, 1.0, 0, 1, 0))
    assert steps[-1].shape == (1, len(prompt_ids) + window + 5)


# Eight requests unlike each other: prompt, max new tokens, temperature, top-k, samples, seed, and the step at which
# each joins the batch. The long prompt runs past the tiny model's context of 256 tokens, so its rows slide.
REQUESTS = [
    ("ROMEO:", 12, 0, 0, 1, 1, 0),
    ("JULIET:\nO Romeo, Romeo", 20, 0.8, 50, 2, 2, 0),
    ("A", 5, 1.0, 0, 1, 3, 0),
    ("First Citizen:\nBefore we proceed any further, hear me speak.", 15, 1.3, 5, 3, 4, 2),
    ("KING", 25, 0, 0, 2, 5, 2),
    ("ROMEO: " * 82, 14, 0.9, 20, 1, 6, 3),
    ("BIANCA:\n", 18, 0.7, 1000, 4, 7, 6),
    ("To be", 9, 1.0, 1, 1, 8, 9),
]


def test_a_request_gets_the_same_text_alone_and_in_a_batch_of_eight(app) -> None:
    """Rows of different lengths share one forward per token: padding, positions and random draws must keep each
    request's tokens what they are alone, also as others join, slide past the context, finish or are stopped."""
    loaded = app.load(os.environ["MODEL_DIR"])
    model, window = copy.deepcopy(loaded.model), loaded.model.config.n_positions
    with torch.no_grad():  # a few steps of training leave positions all but unused: make them matter
        model.transformer.wpe.weight.mul_(30)
    jobs = {app.Job(loaded.tokenizer(p)["input_ids"], *settings): at for p, *settings, at in REQUESTS}
    long_prompt = [job for job in jobs if len(job.prompt_ids) > 100][0]
    assert len(long_prompt.prompt_ids) < window < len(long_prompt.prompt_ids) + long_prompt.max_new_tokens
    stopped = app.Job(loaded.tokenizer(PROMPT)["input_ids"], 30, 1.0, 0, 2, 9)  # joins at step 1, stopped after step 4
    jobs[stopped] = 1
    settings = lambda job: (job.max_new_tokens, job.temperature, job.top_k, job.num_samples, job.seed)  # noqa: E731
    alone = {job: list(app.sample(model, job.prompt_ids, *settings(job)))[-1] for job in jobs if job is not stopped}
    batch, step, most_rows, slid = app.Batch(model), 0, 0, False
    while batch.jobs or step <= max(jobs.values()):
        batch.step([job for job, at in jobs.items() if at == step])
        most_rows, slid = max(most_rows, batch.rows), slid or bool(batch.sliding)
        stopped.cancelled = stopped.cancelled or step == 4
        step += 1
    assert most_rows >= 12 and slid and stopped.seq.size(1) == len(stopped.prompt_ids) + 4
    for job, tokens in alone.items():
        assert torch.equal(job.seq, tokens), loaded.tokenizer.decode(job.prompt_ids)


def test_requests_sent_together_get_the_text_each_gets_alone(app) -> None:
    """The app's scheduler thread: eight pages generating at once read the same text as each one alone."""
    requests = [(p, n, t, k, s, seed) for p, n, t, k, s, seed, _ in REQUESTS]
    final = lambda request: list(app.generate(*request))[-1][0]  # noqa: E731
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        together = list(pool.map(final, requests))
    assert together == [final(request) for request in requests]


@pytest.mark.parametrize(
    "inputs, message",
    [
        (("", 20, 0.8, 200, 1, 1), "Type a prompt first"),
        (("   \n", 20, 0.8, 200, 1, 1), "Type a prompt first"),
        ((None, 20, 0.8, 200, 1, 1), "Type a prompt first"),
        (("x" * 1001, 20, 0.8, 200, 1, 1), "at most 1,000 are allowed"),
        ((PROMPT, 301, 0.8, 200, 1, 1), "Max new tokens must be between 1 and 300"),
        ((PROMPT, 0, 0.8, 200, 1, 1), "Max new tokens must be between 1 and 300"),
        ((PROMPT, 20, -0.5, 200, 1, 1), "Temperature must be between 0 and 2"),
        ((PROMPT, 20, float("nan"), 200, 1, 1), "Temperature must be between 0 and 2"),
        ((PROMPT, 20, 0.8, 200, 5, 1), "Samples must be between 1 and 4"),
        ((PROMPT, 20, 0.8, "many", 1, 1), "Top-k must be a number"),
        ((PROMPT, 20, 0.8, 200, 1, 1.5), "Seed must be a whole number"),
        ((PROMPT, 20, 0.8, 200, 1, None), "Seed must be a number"),
    ],
)
def test_bad_input_gives_a_message_and_no_text(app, inputs, message: str) -> None:
    with pytest.warns(UserWarning, match=re.escape(message)):  # gr.Warning outside a request is a Python warning
        updates = list(app.generate(*inputs))
    assert len(updates) == 1 and updates[0][0] == "" and message in updates[0][1]


def test_the_precision_is_float32_unless_space_dtype_says_bfloat16(app, monkeypatch) -> None:
    monkeypatch.delenv("SPACE_DTYPE", raising=False)
    assert app.cpu_dtype() == torch.float32
    monkeypatch.setenv("SPACE_DTYPE", "bfloat16")
    assert app.cpu_dtype() == torch.bfloat16
    monkeypatch.setenv("SPACE_DTYPE", "fp16")
    with pytest.raises(SystemExit, match="SPACE_DTYPE must be float32 or bfloat16, got 'fp16'"):
        app.cpu_dtype()


def test_space_readme_has_the_metadata_a_space_needs() -> None:
    readme = (SPACE / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(readme.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["pinned"] is False
    assert {"title", "emoji", "colorFrom", "colorTo", "sdk_version"} <= set(meta)
    pins = dict(line.split("==") for line in (SPACE / "requirements.txt").read_text().splitlines() if "==" in line)
    assert meta["sdk_version"] == pins["gradio"] == gr.__version__
    assert {"gradio", "torch", "transformers", "safetensors"} <= set(pins)
    tree = ast.parse((SPACE / "app.py").read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.startswith("nanogpt_lib")}  # runs from the exported folder alone


# ---------------------------------------------------------------------- the app in a browser


def wait_for(condition, what: str, limit_s: float = 60.0, every_s: float = 0.2, state=None):
    """Poll ``condition()`` until it returns something truthy; fail naming ``what`` (and ``state()``, what the page
    showed last) if it never does."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    pytest.fail(f"gave up waiting for {what}" + (f"; the page shows: {state()!r}" if state else ""))


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:  # events in between are not needed
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def served(model_dir: Path, tmp_path_factory):
    """The app as a user starts it (python space/app.py), on a free loopback port."""
    proc, url = space_load.start_app(model_dir, tmp_path_factory.mktemp("app") / "app.log", limit_s=120)
    try:
        yield url
    finally:
        space_load.stop_process(proc)


@pytest.fixture(scope="module")
def browser(served: str, tmp_path_factory):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium not installed (apt-get install chromium): the browser test of the Space needs it")
    profile = tmp_path_factory.mktemp("chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--window-size=1280,1200",
             f"--user-data-dir={profile}"]  # fmt: skip
    proc = subprocess.Popen([chromium, *flags, served], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"  # Chromium writes the port it chose here
        port = wait_for(lambda: port_file.is_file() and port_file.read_text().split("\n")[0].strip(), "DevTools")

        def page_socket() -> str | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                pages = [t for t in json.load(response) if t["type"] == "page" and t["url"].startswith(served)]
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        tools = DevTools(wait_for(page_socket, "the page in Chromium"))
        try:
            yield tools
        finally:
            tools.close()
    finally:
        space_load.stop_process(proc)


RENDERED = (
    "!!(document.querySelector('#prompt textarea') && document.querySelector('#generate') && "
    "document.querySelector('#output textarea') && document.querySelector('#message'))"
)


def type_prompt(page: DevTools, text: str) -> None:
    """Replace the prompt as a person would: focus the box, select everything, type (or delete)."""
    page.js("(() => { const box = document.querySelector('#prompt textarea'); box.focus(); box.select(); })()")
    if text:
        page.call("Input.insertText", text=text)
    else:
        for kind in ("keyDown", "keyUp"):
            page.call("Input.dispatchKeyEvent", type=kind, key="Backspace", code="Backspace",
                      windowsVirtualKeyCode=8)  # fmt: skip
    wait_for(lambda: page.js("document.querySelector('#prompt textarea').value") == text, "the prompt to change")


def set_number(page: DevTools, label: str, value: int) -> None:
    """Type a number into the box beside a slider, then leave the box with Tab."""
    page.js(f"(() => {{ const box = document.querySelector('input[aria-label=\"number input for {label}\"]'); "
            f"box.focus(); box.select(); }})()")  # fmt: skip
    page.call("Input.insertText", text=str(value))
    for kind in ("keyDown", "keyUp"):
        page.call("Input.dispatchKeyEvent", type=kind, key="Tab", code="Tab", windowsVirtualKeyCode=9)
    slider = f"document.querySelector('input[aria-label=\"range slider for {label}\"]').value"
    wait_for(lambda: page.js(slider) == str(value), f"{label} to become {value}")


def click_generate(page: DevTools) -> None:
    page.js("document.querySelector('#generate').click()")


def message(page: DevTools) -> str:
    return page.js("document.querySelector('#message').innerText") or ""


def test_space_generates_text_in_a_browser(browser: DevTools) -> None:
    wait_for(lambda: browser.js(RENDERED), "the page to render")
    assert browser.js("document.querySelector('#prompt textarea').value") == "BIANCA:\n"  # the default prompt
    assert "optimizer steps" in browser.js("document.querySelector('#summary').innerText")  # the run's numbers
    type_prompt(browser, PROMPT + "\n")
    set_number(browser, "Max new tokens", 40)
    click_generate(browser)
    body = lambda: browser.js("document.body.innerText")  # noqa: E731
    wait_for(lambda: message(browser).startswith("Done"), "the generation to finish", limit_s=120, state=body)
    assert message(browser).startswith("Done: 40 new tokens per sample")
    text = browser.js("document.querySelector('#output textarea').value")
    assert text.startswith(PROMPT + "\n") and len(text) > len(PROMPT) + 10, text
    shot = os.environ.get("SPACE_SCREENSHOT")
    if shot:  # a picture of the page for the README, on request only
        size = browser.call("Page.getLayoutMetrics")["cssContentSize"]  # the whole page, not only the window
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = browser.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        Path(shot).write_bytes(base64.b64decode(data))


def test_space_empty_prompt_shows_a_message_in_the_page(browser: DevTools) -> None:
    wait_for(lambda: browser.js(RENDERED), "the page to render")
    type_prompt(browser, "")
    click_generate(browser)
    body = lambda: browser.js("document.body.innerText")  # noqa: E731
    wait_for(lambda: "Type a prompt first" in message(browser), "the message about the empty prompt", state=body)
    assert "Type a prompt first" in browser.js("document.body.innerText")
    assert "Traceback" not in browser.js("document.body.innerText")


# ---------------------------------------------------------------------- the app under load


def test_the_app_under_a_burst_serves_every_accepted_request_and_turns_the_rest_away(
    app, model_dir: Path, tmp_path
) -> None:
    """8 clients send 6 requests each at once, more than the app serves and queues: each one it accepts gets its
    text, the ones beyond the queue are told at once that it is full, and the app's memory stays within bounds."""
    slots = app.CONCURRENT_REQUESTS + app.QUEUE_SIZE
    assert 8 * 3 <= app.CONCURRENT_REQUESTS < slots < 8 * 6  # 8 readers x 3 are all served; 8 x 6 overflow
    load = space_load.run(model_dir, clients=8, requests=6, max_new_tokens=100, log=tmp_path / "app.log")
    served, busy = load.of("served"), load.of("busy")
    assert not load.of("failed"), [o.message for o in load.of("failed")]
    assert len(served) + len(busy) == 48 and len(served) >= slots
    assert busy and all("Queue is full" in o.message for o in busy)  # 48 at once > what is served and queued
    assert all(o.text.startswith(space_load.PROMPT) and len(o.text) > len(space_load.PROMPT) for o in served)
    assert max(o.seconds for o in busy) < min(o.seconds for o in served)  # turned away at once, not after waiting
    if load.rss_before_mib is not None:
        assert load.rss_after_mib - load.rss_before_mib < 200, (load.rss_before_mib, load.rss_after_mib)
