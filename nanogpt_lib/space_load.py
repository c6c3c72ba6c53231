"""The Space under load: the app started on loopback, many clients at once through ``gradio_client``.

    python -m nanogpt_lib.space_load --model_dir out/full-hf --clients 8 --requests 3 --out results/space_load.md

starts ``space/app.py`` on a free port of 127.0.0.1 with the exported model, sends one request to warm it up, then
has every client send its requests at once (``--clients`` x ``--requests`` generations in flight together) and
waits for all of them. It prints, and with ``--out`` writes as markdown with the command above it: how many
requests got their text, how many the full queue turned away (and with which message), how many failed otherwise,
the latency of those served (p50, p95, max: from sending to the last token), and the app's resident memory after
the warm-up and after the load. The app generates up to CONCURRENT_REQUESTS requests together, in one batch, and
queues QUEUE_SIZE more (space/app.py); a burst beyond that is turned away at once instead of piling up.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gradio_client import Client

from . import runlog
from .atomic import atomic_write
from .device import cpu_model
from .errors import UserError, run_cli

APP = Path(__file__).resolve().parent.parent / "space" / "app.py"
PROMPT = "ROMEO:\n"


@dataclass
class Outcome:
    """One request: ``served`` with its text, ``busy`` (turned away by the full queue) or ``failed``."""

    kind: str
    seconds: float
    text: str = ""
    message: str = ""


@dataclass
class Load:
    """What a burst of requests got, and the app's memory around it."""

    outcomes: list[Outcome]
    rss_before_mib: float | None
    rss_after_mib: float | None
    wall_s: float

    def of(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind]

    def latency(self, quantile: float) -> float | None:
        seconds = sorted(o.seconds for o in self.of("served"))
        return seconds[min(len(seconds) - 1, round(quantile * (len(seconds) - 1)))] if seconds else None


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB (Linux: /proc; None elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DTYPES = ("float32", "bfloat16")  # the app's SPACE_DTYPE


def start_app(model_dir: Path, log: Path, limit_s: float = 180, dtype: str = "float32") -> tuple[subprocess.Popen, str]:
    """``space/app.py`` on a free loopback port, as a user starts it (its model in ``dtype``); (process, URL) once it
    answers."""
    port = free_port()
    env = {
        **os.environ,
        "MODEL_DIR": str(model_dir),
        "SPACE_DTYPE": dtype,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
    }
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(APP)], env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"the app exited with status {proc.returncode}: {log.read_text().strip()[-500:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    stop_process(proc)
    raise UserError(f"the app did not answer on {url} within {limit_s:.0f} s (its log: {log})")


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate, and kill if it has not ended 20 s later."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def request(client: Client, max_new_tokens: int, seed: int) -> Outcome:
    """One generation through the app's API, timed from sending to its last token."""
    start = time.perf_counter()
    try:
        text, message = client.predict(PROMPT, max_new_tokens, 0.8, 200, 1, seed, api_name="/generate")
    except Exception as err:  # gradio_client raises its own errors and those of the transport alike
        kind = "busy" if "queue is full" in str(err).lower() else "failed"
        return Outcome(kind, time.perf_counter() - start, message=f"{type(err).__name__}: {err}")
    served = isinstance(text, str) and str(message).startswith("Done")
    return Outcome("served" if served else "failed", time.perf_counter() - start, text or "", str(message))


def burst(url: str, clients: int, requests: int, max_new_tokens: int) -> list[Outcome]:
    """Every client sends its ``requests`` at once: clients x requests generations in flight together."""
    connected = [Client(url, verbose=False) for _ in range(clients)]  # connected before the burst
    with ThreadPoolExecutor(max_workers=clients * requests) as pool:
        futures = [
            pool.submit(request, client, max_new_tokens, 1000 * c + r)
            for c, client in enumerate(connected)
            for r in range(requests)
        ]
        return [future.result() for future in futures]


def run(model_dir: Path, clients: int, requests: int, max_new_tokens: int, log: Path, dtype: str = "float32") -> Load:
    """Start the app, warm it up with one request, send the burst, stop the app."""
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} is not an exported model (no config.json): python -m nanogpt_lib.export first")
    proc, url = start_app(model_dir, log, dtype=dtype)
    try:
        warm = request(Client(url, verbose=False), max_new_tokens, 0)
        if warm.kind != "served":
            raise UserError(f"the warm-up request was not served: {warm.message}")
        before = rss_mib(proc.pid)
        start = time.perf_counter()
        outcomes = burst(url, clients, requests, max_new_tokens)
        wall = time.perf_counter() - start
        return Load(outcomes, before, rss_mib(proc.pid), wall)
    finally:
        stop_process(proc)


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} MiB"


def table(load: Load, clients: int, requests: int, max_new_tokens: int, dtype: str = "float32") -> str:
    busy = load.of("busy")
    failed = load.of("failed")
    rows = [
        ("requests sent at once", f"{len(load.outcomes)} ({clients} clients × {requests})"),
        ("served, with their text", f"{len(load.of('served'))}"),
        ("turned away by the full queue", f"{len(busy)}" + (f" (`{busy[0].message}`)" if busy else "")),
        ("failed otherwise", f"{len(failed)}" + (f" (first: `{failed[0].message}`)" if failed else "")),
        ("latency of those served: p50 / p95 / max", " / ".join(_s(load.latency(q)) for q in (0.5, 0.95, 1.0))),
        ("all of the burst answered after", _s(load.wall_s)),
        ("the app's memory: after the warm-up → after the burst", f"{_mib(load.rss_before_mib)} → "
         f"{_mib(load.rss_after_mib)}"),
        ("each request", f"{max_new_tokens} new tokens, 1 sample, temperature 0.8, top-k 200"),
        ("the model computed in", f"{dtype} (SPACE_DTYPE)"),
        ("machine", f"CPU {cpu_model() or '?'}, {os.cpu_count()} cores"),
    ]  # fmt: skip
    return "| | |\n| --- | --- |\n" + "\n".join(f"| {what} | {value} |" for what, value in rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nanogpt_lib.space_load",
        description="Start the Space's app on loopback and send it many requests at once through gradio_client.",
    )
    parser.add_argument("--model_dir", required=True, type=Path, help="an exported model folder (nanogpt export)")
    parser.add_argument("--clients", type=int, default=8, help="clients sending at once (default 8)")
    parser.add_argument("--requests", type=int, default=3, help="requests each client sends at once (default 3)")
    parser.add_argument("--max_new_tokens", type=int, default=200, help="tokens per request (default 200)")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="float32", help="the precision the app runs its model in (default float32)"
    )
    parser.add_argument("--out", type=Path, help="also write the table, with the command, to this markdown file")
    args = parser.parse_args(argv)
    if min(args.clients, args.requests, args.max_new_tokens) < 1:
        raise UserError("--clients, --requests and --max_new_tokens must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        load = run(args.model_dir, args.clients, args.requests, args.max_new_tokens, Path(tmp) / "app.log", args.dtype)
    text = table(load, args.clients, args.requests, args.max_new_tokens, args.dtype)
    print(text)
    if args.out:
        command = runlog.command_line("nanogpt_lib.space_load", sys.argv[1:] if argv is None else argv)
        doc = f"# The Space under load\n\n```bash\n{command}\n```\n\n{text}"
        atomic_write(args.out, lambda fh: fh.write(doc.encode("utf-8")))
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
