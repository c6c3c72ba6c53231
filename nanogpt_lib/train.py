"""The training loop (``Trainer``) and the ``python -m nanogpt_lib.train`` command.

The loop writes the run directory (see "The run directory" in docs/reference.md) and reports progress through
callbacks, so the CLI can print lines and a notebook can draw a live plot without the loop knowing who is watching::

    trainer = Trainer(TrainConfig(model="tiny", steps=100))
    trainer.add_callback("on_log", lambda row: print(row["step"], row["loss"]))
    summary = trainer.run()

The events and what each passes are listed in events.py. The rest lives beside it: what a session trains with and
its step (session.py), what a session decides about last.pt (resume.py), what the run records (records.py), when it
stops (stop_rules.py).
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import sys
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from . import checkpoint, distributed, resume, runlog, stop_rules
from .checkpoint_writer import CheckpointWriter
from .config import TrainConfig, parse_train_args
from .device import device_name
from .errors import UserError, run_cli
from .evaluate import corpus_loss
from .events import Events
from .interrupts import StopRequests
from .loop_state import LoopState
from .records import run_config_record, sessions, summary_record
from .rundir import RunDir
from .sample import generate_samples
from .session import Session, assemble
from .step import mean_over_group


def out_of_memory_advice(cfg: TrainConfig, step: int) -> str:
    """One line for a GPU out of memory: half the batch, twice the accumulation (the same tokens per step)."""
    if cfg.batch_size > 1:
        fix = (
            f"--batch_size {cfg.batch_size // 2} --grad_accum {cfg.grad_accum * 2} "
            f"({(cfg.batch_size // 2) * cfg.seq_len * cfg.grad_accum * 2:,} tokens per step"
            f"{', the same' if cfg.batch_size % 2 == 0 else ''})"
        )
    else:
        fix = "a smaller --seq_len (batch_size is already 1)"
    return (
        f"out of GPU memory after step {step} with --batch_size {cfg.batch_size} x --seq_len {cfg.seq_len}; "
        f"try {fix}, then --resume; last.pt is intact"
    )


def _lost_peer(err: RuntimeError) -> bool:
    """Whether a collective failed because another process of the group is gone (not a bug of this one)."""
    text = str(err)
    return isinstance(err, torch.distributed.DistBackendError) or any(
        clue in text for clue in ("Connection closed", "Connection reset", "Broken pipe", "peer")
    )


def start_line(cfg: TrainConfig, session: Session) -> str:
    """The log's line about what trains: model, device, precision (and why), data, tokens per step."""
    world = session.group.world_size
    per_process = f" ({cfg.batch_size} x {cfg.seq_len} x {cfg.grad_accum} per process x {world})" if world > 1 else ""
    return (
        f"Model {cfg.model}: {session.raw_model.num_params():,} parameters | device {device_name(session.device)} | "
        f"amp {session.amp} ({session.plan.amp.reason}) | compile {session.plan.compile.value} | "
        f"{len(session.tokens):,} tokens in {cfg.input_file} | {session.tokens_per_step:,} tokens/step{per_process}"
    )


def start_info(cfg: TrainConfig, session: Session, start_step: int) -> dict[str, Any]:
    """What the ``on_start`` event passes (events.py)."""
    return {
        "n_params": session.raw_model.num_params(),
        "device": device_name(session.device),
        "amp": session.amp,
        "start_step": start_step,
        "steps": cfg.steps,
        "tokens_in_corpus": len(session.tokens),
    }


def checkpoint_time_line(summary: dict[str, Any]) -> str:
    """The log's last word on checkpoints: how long they held up training, and how long they took to write."""
    held, elapsed = summary["checkpoint_time_s"], summary["wall_time_s"]
    return (
        f"Checkpoints: {held:.1f}s of training held up ({100 * held / elapsed if elapsed > 0 else 0.0:.1f}% of "
        f"{elapsed:.1f}s wall time); {summary['checkpoint_background_s']:.1f}s of writing in the background in this "
        f"session"
    )


def user_error(
    err: RuntimeError | OSError, cfg: TrainConfig, step: int, group: distributed.Group, saved_step: int
) -> UserError | None:
    """The one line for a failure the user can act on (GPU memory, a process of the group gone, a disk), else None."""
    if isinstance(err, torch.OutOfMemoryError):
        return UserError(out_of_memory_advice(cfg, step))
    if isinstance(err, OSError):
        return UserError(
            f"could not write {err.filename or cfg.out_dir}: {err.strerror or err}; "
            f"the checkpoints already on disk are intact (free some space, then --resume)"
        )
    if group.enabled and _lost_peer(err):  # under torchrun: another process died, its connection closed
        return UserError(
            f"process {group.rank} of {group.world_size}: the group broke off ({str(err).splitlines()[0][:200]}); "
            f"last.pt (step {saved_step}) is intact: run the same torchrun command with --resume"
        )
    return None


class Trainer:
    """Trains a GPT on one text file according to a TrainConfig, writing a run directory (``rundir.RunDir``)."""

    def __init__(self, cfg: TrainConfig, command: str | None = None):
        self.asked = self.cfg = cfg  # as given (run_config.json's); from run() on, with this machine's micro-batch
        self.command = command or "nanogpt_lib.train.Trainer (from Python)"
        self.events = Events()
        # set by run(), which a second call starts afresh from the checkpoint:
        self.session: Session  # what the session trains with (session.py)
        self.run_dir: RunDir  # the session's (one that writes nothing on processes other than rank 0)
        self.state: LoopState  # step, recent losses, timers: what last.pt carries of the loop
        self.stop_requests: StopRequests  # Ctrl-C and SIGTERM (under torchrun: the group's decision of each step)
        self.resumes: list[dict[str, Any]] = []  # one entry per session that continued this run
        self.resumed_from_checkpoint = False
        self.saved_step = 0  # the step last.pt holds (or is being written with)
        self.writer: CheckpointWriter  # writes checkpoints in the background; one per run()
        self.log: runlog.TextLog
        self.metrics: runlog.MetricsCSV

    def add_callback(self, event: str, fn: Callable) -> None:
        """Call ``fn`` on ``event`` (one of events.EVENTS)."""
        self.events.add(event, fn)

    def _say(self, line: str) -> None:
        self.log.write(line)
        self.events.emit("on_message", line)

    def elapsed(self) -> float:
        """Wall time of the run so far, every session counted."""
        return self.state.timers.elapsed()

    # ------------------------------------------------------------------ set-up

    def _setup(self) -> None:
        self.asked.validate()
        self.stop_requests = StopRequests()
        self.session, restored = assemble(self.asked, say=self._say)
        self.cfg = self.session.cfg
        self.state = restored if restored is not None else LoopState.fresh(self.cfg.log_every)
        self.resumed_from_checkpoint = restored is not None
        self.events.speaks = self.session.group.is_main  # one process speaks for the group
        self.run_dir, self.writer = self.session.run_dir, CheckpointWriter()
        with self.session.group.closed_on_error():
            self._open_run_files()

    def _open_run_files(self) -> None:
        """Open the log and the metrics (rows past the checkpoint's step are dropped: they are redone); record this
        session in run_config.json. Other processes than rank 0 get files that write nothing."""
        self.saved_step = self.state.step
        self.log = self.run_dir.open_log()
        self.metrics = self.run_dir.open_metrics(keep_until_step=self.state.step)
        resumed = self.resumed_from_checkpoint
        previous = self.run_dir.read_run_config() if resumed else {}
        self.resumes, changed = sessions(resumed, self.state, self.metrics.dropped, previous, self.asked, self.command)
        for line in [*self.session.plan.lines(self.cfg.seq_len), *([changed] if changed else [])]:  # the plan first
            self._say(line)
        self.run_dir.write_run_config(run_config_record(self.asked, self.session, previous, self.command, self.resumes))

    # ------------------------------------------------------------------ checkpoints, samples, evaluation

    def _save(self, best: tuple[float, str] | None = None) -> None:
        """Save ``best.pt`` (when ``best`` gives a loss and its reason) and ``last.pt``, written in the background.

        Only the snapshot of the state (and waiting for a write still in flight) holds up training; that time
        is what ``checkpoint_s`` counts. Under torchrun every process takes part (each one's RNG state goes into
        last.pt) and rank 0 writes.
        """
        with self.state.timers.phase("checkpoint_s"):
            state, session, files = self.state, self.session, []
            if best is not None:
                state.best_saved_loss = best[0]  # before the payload of last.pt, which carries it
                files.append((self.run_dir.best, checkpoint.weights_record(session.raw_model, state.step, *best)))
                self._say(f"New best loss {best[0]:.6f} ({best[1]}) at step {state.step}: writing best.pt")
            rng = resume.rng_state(session.device, session.group)  # every process takes part
            self.saved_step = state.step
            if session.group.is_main:  # the writer snapshots the live tensors
                last = session.payload(rng, state.to_dict(self.elapsed()))
                self.writer.submit([*files, (self.run_dir.last, last)])

    def _checkpoint(self) -> None:
        """Save last.pt; save best.pt when the recent mean loss beats the one best.pt was saved with.

        best.pt is judged at checkpoint time, on the mean step loss of the last log_every steps, instead
        of on every new minimum of a single noisy step: a handful of writes per run instead of hundreds.
        """
        recent, window = self.state.recent_mean, len(self.state.recent_losses)
        self._save((recent, f"mean of the last {window} steps") if recent < self.state.best_saved_loss else None)

    def _sample(self) -> None:
        if not self.session.group.is_main:
            return
        cfg, step, texts = self.cfg, self.state.step, []
        with self.state.timers.phase("sample_s"):
            for prompt, outputs in generate_samples(self.session.raw_model, cfg.generation, step, self.session.amp):
                self.run_dir.append_samples(step, prompt, outputs, cfg.temperature, cfg.top_k)
                texts += outputs
        self.events.emit("on_sample", step, texts)

    def _corpus_loss(self, why: str) -> float:
        cfg, p = self.cfg, self.session
        with self.state.timers.phase("eval_s") as lap:
            # the uncompiled model: a pass that runs once would otherwise pay for compiling its shapes
            windows = cfg.batch_size * cfg.grad_accum
            loss = corpus_loss(p.raw_model, p.tokens, cfg.seq_len, windows, p.device, p.amp, p.group)
        self.state.record_corpus_loss(loss)
        self._say(
            f"Full-corpus loss {loss:.6f} at step {self.state.step} ({len(p.tokens) - 1:,} tokens, "
            f"{lap.seconds:.1f}s); evaluated because {why}"
        )
        return loss

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict[str, Any]:
        """Train until ``steps`` or the target; returns the summary (also written to summary.json)."""
        self._setup()
        try:
            with self.stop_requests:
                return self._loop()
        except (RuntimeError, OSError) as err:
            error = user_error(err, self.cfg, self.state.step, self.session.group, self.saved_step)
            if error is None:
                raise
            raise error from None
        finally:
            self.writer.close()  # a write in flight finishes before the process moves on
            self.log.close()
            self.metrics.close()
            self.session.group.close()

    def _loop(self) -> dict[str, Any]:
        """Step → record → maybe evaluate → the stop decision → maybe log → periodic save and sample → signals."""
        cfg, state, stopping = self.cfg, self.state, self.cfg.stopping
        state.timers.start_session()
        start_step = state.step
        self._announce()
        if state.step >= cfg.steps:
            self._say(f"Already at step {state.step} of {cfg.steps}: nothing to train (pass a larger --steps).")
            return self._finish("completed", None, None)
        while True:
            step_loss, grad_norm, lr = self._step(first=state.step == start_step)
            state.record(step_loss, cfg.target_loss)
            why = stop_rules.corpus_pass_reason(stopping, state) if math.isfinite(step_loss) else None
            corpus = self._corpus_loss(why) if why else None
            stop = stop_rules.decide(
                stopping, state, stop_rules.Seen(step_loss, corpus, self.session.batches.tokens_seen)
            )
            if stop is not None and stop.status == "diverged":
                self._diverge(stop)
            if state.step % cfg.log_every == 0 or stop or corpus is not None:
                self._log_row(step_loss, grad_norm, lr, corpus)
            if stop is not None:
                return self._end(stop, corpus)
            if cfg.save_every and state.step % cfg.save_every == 0:
                self._checkpoint()
            if cfg.sample_every and state.step % cfg.sample_every == 0:
                self._sample()
            if self.stop_requests.asked:
                if self.saved_step != state.step:  # not twice when this step's checkpoint was just written
                    self._save()
                self._say(
                    f"Stopped by {self.stop_requests.name or 'a signal to another process'} after step {state.step}: "
                    f"saved last.pt; continue with --resume."
                )
                return self._finish("interrupted", None, None)

    def _announce(self) -> None:
        cfg, state, p = self.cfg, self.state, self.session
        if cfg.resume and not self.resumed_from_checkpoint:
            self._say(f"No checkpoint at {self.run_dir.last}: starting a fresh run.")
        if self.resumed_from_checkpoint:
            self._say(f"Resumed from {self.run_dir.last} at step {state.step} ({p.batches.tokens_seen:,} tokens seen).")
        self._say(start_line(cfg, p))
        self.events.emit("on_start", start_info(cfg, p, state.step))

    def _step(self, first: bool) -> tuple[float, torch.Tensor | None, float]:
        """One optimizer step, timed; the first of a session counts as warm-up (allocation, compilation).

        Returns the step loss (fp32, the one host-device sync per step), the gradient norm and the rate."""
        state, p, stops = self.state, self.session, self.stop_requests
        with state.timers.phase("warmup_s" if first else "train_s"):
            loss, grad_norm, lr = (p.first_step if first else p.step)(state.step + 1)
            state.step += 1
            if p.group.enabled:
                loss, stops.group_asked = mean_over_group(loss, stops.signal is not None, p.group)
            step_loss = loss.item()
            self.writer.raise_if_failed()  # a failed background write stops the run here, with its file named
        if not first:
            state.timers.add("train_tokens", p.tokens_per_step)
        return step_loss, grad_norm, lr

    def _log_row(self, step_loss: float, grad_norm: torch.Tensor | None, lr: float, corpus: float | None) -> None:
        batches = self.session.batches
        row = {
            "step": self.state.step, "loss": step_loss, "lr": lr,
            "grad_norm": grad_norm.item() if grad_norm is not None else None, "tokens_seen": batches.tokens_seen,
            "epoch": batches.epochs, "tok_per_s": self.state.timers.rate_since_last_row(),
            "elapsed_s": self.elapsed(), "corpus_loss": corpus,
        }  # fmt: skip
        self.metrics.write(row)
        self.events.emit("on_log", row)
        self._say(runlog.step_line(row, self.cfg.steps))

    def _end(self, stop: stop_rules.Stop, corpus: float | None) -> dict[str, Any]:
        """The run ends here: at the target (best.pt with the weights that reached it, both losses measured) or
        after its last step."""
        self._say(f"{stop.message} ({self.session.batches.tokens_seen:,} tokens, {self.elapsed():.1f}s)")
        reached = stop.status == "target_reached"
        if reached:
            self._save(best=(stop.value, f"target reached by {stop.what}"))
        else:
            self._checkpoint()
        self._sample()  # while the checkpoints are written (the periodic sample of this step comes after the stop)
        if corpus is None and reached:
            corpus = self._corpus_loss("the run reached its target: the summary reports both losses")
        return self._finish(stop.status, stop, corpus)

    def _diverge(self, stop: stop_rules.Stop) -> None:
        """A loss that is not a number: the summary says so, last.pt stays as it was, the run stops with one line."""
        message = (
            f"{stop.message}. last.pt (step {self.saved_step}) is untouched; try --amp bf16 (or off) or a lower --lr, "
            f"then --resume"
        )
        self._say(f"Stopped: {message}")
        self._finish("diverged", stop, None)
        raise UserError(message)

    def _finish(self, status: str, stop: stop_rules.Stop | None, corpus: float | None) -> dict[str, Any]:
        with self.state.timers.phase("checkpoint_s"):  # the summary describes checkpoints on disk: wait for them
            self.writer.wait()
        signal = (self.stop_requests.name or "a signal to another process") if status == "interrupted" else None
        written = {"signal": signal, "background_s": self.writer.write_seconds, "resumes": len(self.resumes)}
        summary = summary_record(self.cfg, self.session, self.state, status, stop, corpus, **written)
        self.run_dir.write_summary(summary)
        self._say(checkpoint_time_line(summary))
        if status in ("completed", "target_reached"):
            self._say("Training complete.")
        self.events.emit("on_end", summary)
        self.session.group.barrier()  # no process exits (torchrun would stop the others) before rank 0 has written
        return summary


# ---------------------------------------------------------------------- command line


def _console_callbacks(trainer: Trainer, cfg: TrainConfig) -> None:
    """Print every log line; on a terminal, also a tqdm progress bar (lines are written above it)."""
    if sys.stderr.isatty():
        bar = tqdm(total=cfg.steps, unit="step", dynamic_ncols=True, file=sys.stderr)

        def on_start(info: dict) -> None:
            bar.n = info["start_step"]
            bar.refresh()

        def on_log(row: dict) -> None:
            bar.update(row["step"] - bar.n)

        trainer.add_callback("on_start", on_start)
        trainer.add_callback("on_message", lambda line: bar.write(line))
        trainer.add_callback("on_log", on_log)
        trainer.add_callback("on_end", lambda summary: bar.close())
    else:
        trainer.add_callback("on_message", lambda line: print(line, flush=True))


def continue_command(argv: list[str], cfg: TrainConfig, group: distributed.Group) -> str:
    """The command that resumes an interrupted run: the same flags, --resume instead of any --overwrite.

    Flags that argparse took for --overwrite or --resume (abbreviated or negated too) are dropped; when a --config
    file may have set overwrite, --no-overwrite turns it off (flags win over the file).
    """

    def means(arg: str, *names: str) -> bool:  # argparse accepts any unambiguous prefix of a flag
        flag = arg.split("=", 1)[0]
        return len(flag) > 2 and flag.startswith("--") and any(name.startswith(flag) for name in names)

    kept = [a for a in argv if not means(a, "--overwrite", "--no-overwrite", "--resume", "--no-resume")]
    from_file = cfg.overwrite and any(means(a, "--config") for a in argv)
    launcher = ["python"]
    if group.enabled:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", group.world_size))
        # several machines: the same command, with the rendezvous flags it was started with instead of --standalone
        rendezvous = "--standalone" if per_node == group.world_size else "<your --nnodes/--rdzv flags>"
        launcher = ["torchrun", rendezvous, f"--nproc_per_node={per_node}"]
    return shlex.join(
        [*launcher, "-m", "nanogpt_lib.train", *kept, *(["--no-overwrite"] if from_file else []), "--resume"]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_train_args(
        argv,
        prog="python -m nanogpt_lib.train",
        description="Train a GPT-2 style model from scratch on a text file until the training loss reaches a target.",
    )
    trainer = Trainer(cfg, command=shlex.join(["python", "-m", "nanogpt_lib.train", *argv]))
    _console_callbacks(trainer, cfg)
    summary = trainer.run()
    group = trainer.session.group
    if summary["status"] == "interrupted":
        if group.is_main:
            print(f"Interrupted; continue with: {continue_command(argv, cfg, group)}", file=sys.stderr)
        return 128 + (trainer.stop_requests.signal or signal.SIGTERM)
    if summary["status"] == "target_reached" and group.is_main:
        print(f"Target reached at step {summary['steps']}; run directory: {cfg.out_dir}", file=sys.stderr)
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
