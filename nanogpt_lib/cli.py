"""``nanogpt STEP``: the course's workflow as one command, the same on Linux, macOS, Windows and Colab.

    nanogpt sanity        # 200 steps of the 124M model into out_sanity/, its evidence in results/sanity-<kind>/
    nanogpt plan          # what this machine does with its proven recipe, each choice with its reason, and how long
    nanogpt overnight     # that recipe through notebook 04 into out/full; the same command again resumes
    nanogpt report        # notebook 05 (the README's results), the HTML: all a grader opens, in results/full/

Every step runs in Python: the library's own commands, papermill's and nbconvert's Python APIs, and
``sys.executable -m`` for JupyterLab; never a shell, make or a POSIX tool. ``-p NAME VALUE`` sets a training option
(papermill's parameter, or the flag ``--NAME VALUE``), as often as needed. On Colab, with Google Drive mounted, the
run directory defaults to a folder on Drive, where a disconnected runtime finds it again.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import download, evaluate, export, recipes, report, train
from .atomic import atomic_write
from .config import TrainConfig, load_options
from .device import DEVICE_CHOICES, machine_kind, pick_device
from .errors import UserError, run_cli
from .rundir import is_evidence

ROOT = recipes.ROOT  # the project folder: the library's parent (installed with pip install -e .)
NOTEBOOKS = ROOT / "notebooks"
# the course's two reference commands (python train.py ... in the assignment), as flags of python -m nanogpt_lib.train
SANITY_FLAGS = (
    "--steps 200 --batch_size 4 --seq_len 128 --grad_accum 1 --lr 3e-4 --log_every 10 --save_every 100 "
    "--sample_every 100"
).split()
FULL_FLAGS = (
    "--steps 200000 --batch_size 8 --seq_len 256 --grad_accum 4 --lr 3e-4 --log_every 50 --save_every 2000 "
    "--sample_every 2000"
).split()
PATH_OPTIONS = ("run_dir", "input_file", "readme", "out", "model_dir", "dest")
DRIVE = "NANOGPT_DRIVE"  # where Google Drive's own folder is mounted (Colab: /content/drive/MyDrive)


# ---------------------------------------------------------------------- where runs live


def on_colab() -> bool:
    """Whether this is a Google Colab runtime (its google.colab package is importable)."""
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True


def drive_folder() -> Path | None:
    """Google Drive's own folder when this is Colab and Drive is mounted, else None."""
    folder = Path(os.environ.get(DRIVE, "/content/drive/MyDrive"))
    return folder if on_colab() and folder.is_dir() else None


def in_project(path: str | Path) -> Path:
    """A path as the steps use it, from the project folder they run in: relative when it lies in the project (no
    folder of this machine in an executed notebook handed in), absolute otherwise."""
    path = Path(path).resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def run_dir(args: argparse.Namespace, name: str) -> Path:
    """``--run-dir``, or ``out/NAME`` in the project; on Colab with Drive mounted, ``nanogpt-course/NAME`` on Drive."""
    if args.run_dir:
        return Path(args.run_dir)  # main() took it relative to the project
    drive = drive_folder()
    if drive is not None:
        return drive / "nanogpt-course" / name
    if on_colab():
        print(
            "note: on Colab a run directory outside Google Drive is lost when the runtime disconnects; mount Drive "
            "first (from google.colab import drive; drive.mount('/content/drive')) and run this again",
            file=sys.stderr,
        )
    return Path("out") / name


def ensure_data(path: Path) -> None:
    """The course file at ``path``, downloaded (sha256-checked) when it is missing."""
    if not path.is_file():
        download.main(["--dest", str(path)])


# ---------------------------------------------------------------------- options


def parameters(pairs: list[list[str]]) -> dict[str, Any]:
    """``-p NAME VALUE`` pairs, each value typed as papermill's own ``-p`` types it: True, False and None by name,
    then a whole number, then a decimal one, else the text as it is (``off`` stays the text "off")."""
    return {name: _typed(text) for name, text in pairs}


def _typed(text: str) -> Any:
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def as_flags(values: dict[str, Any]) -> list[str]:
    """Training options as flags of ``python -m nanogpt_lib.train``: ``--NAME VALUE``, a switch ``--NAME`` or
    ``--no-NAME``."""
    flags = []
    for name, value in values.items():
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        else:
            flags += [f"--{name}", str(value)]
    return flags


def run_notebook(name: str, out_dir: Path, values: dict[str, Any], kernel: str) -> Path:
    """Execute ``notebooks/NAME.ipynb`` with papermill into ``out_dir/NAME.ipynb``, its cells' output shown here as
    they run; a cell that fails is one line that names the executed notebook."""
    import papermill

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{name}.ipynb"
    try:
        papermill.execute_notebook(
            str(NOTEBOOKS / f"{name}.ipynb"), str(output), parameters=values, kernel_name=kernel, log_output=True
        )
    except papermill.PapermillExecutionError as err:
        raise UserError(f"{name} stopped in cell {err.exec_count}: {err.ename}: {err.evalue} (see {output})") from None
    except Exception as err:
        if type(err).__name__ != "NoSuchKernel":
            raise
        raise UserError(f"no Jupyter kernel named {kernel!r} (pip install ipykernel, or pass --kernel)") from None
    return output


def export_html(folder: Path, into: Path | None = None) -> list[Path]:
    """The executed notebooks in ``folder`` as self-contained HTML (nbconvert's lab template) in ``into`` (default
    ``folder/html``)."""
    import nbformat
    from nbconvert import HTMLExporter

    from .notebook import add_earlier_sessions

    exporter, written = HTMLExporter(template_name="lab"), []
    for notebook in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(notebook, as_version=4)
        if notebook.stem == "04_full_training":  # a resumed run's sessions before the one it saved, from step 1
            add_earlier_sessions(nb, folder)
        body, _ = exporter.from_notebook_node(nb)
        target = (into or folder / "html") / f"{notebook.stem}.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda fh, text=body: fh.write(text.encode("utf-8")))
        written.append(target)
    return written


def launch(command: list[str], env: dict[str, str] | None, dry_run: bool) -> int:
    """Run a long-lived program (a server) in the foreground, or with ``dry_run`` only say what would run."""
    shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    print(f"{shown} {shlex.join(command)}".strip())
    if dry_run:
        return 0
    return subprocess.run(command, env={**os.environ, **(env or {})}, cwd=ROOT).returncode


# ---------------------------------------------------------------------- the steps


def step_data(args: argparse.Namespace) -> int:
    return download.main(["--dest", args.dest])


def step_sanity(args: argparse.Namespace) -> int:
    out = Path(args.run_dir or "out_sanity")
    ensure_data(Path(args.input_file))
    flags = ["--input_file", args.input_file, "--out_dir", str(out), *SANITY_FLAGS, "--overwrite"]
    status = train.main([*flags, *as_flags(parameters(args.p))])
    if status:
        return status
    kind = f"sanity-{machine_kind()}"
    return report.main(["--out_dir", str(out), "--readme", args.readme, "--name", kind, "--evidence_only"])


def step_train(args: argparse.Namespace) -> int:
    ensure_data(Path(args.input_file))
    out = run_dir(args, "full")
    course = ["--input_file", args.input_file, "--out_dir", str(out), *FULL_FLAGS, "--resume"]
    flags = [*course, *as_flags(parameters(args.p))]
    if args.nproc > 1:  # torchrun, as a module of this Python
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}"]
        return subprocess.run([*launcher, "-m", "nanogpt_lib.train", *flags], cwd=ROOT).returncode
    return train.main(flags)


def step_plan(args: argparse.Namespace) -> int:
    return recipes.main([args.recipe, "--device", args.device, *(["--no_measure"] if args.no_measure else [])])


def step_overnight(args: argparse.Namespace) -> int:
    out = run_dir(args, "full")
    recipe = recipes.choose(args.recipe, pick_device("auto").type)
    values = load_options(recipes.ROOT / recipe.params) if recipe else {}
    values |= {"out_dir": str(out), **parameters(args.p)}
    ensure_data(Path(values.get("input_file", TrainConfig.input_file)))
    name = recipe.name if recipe else "reference"
    print(f"Recipe {name} into {out}; the same command again resumes", file=sys.stderr)
    run_notebook("04_full_training", out, values, args.kernel)
    return 0


def step_report(args: argparse.Namespace) -> int:
    out = run_dir(args, "full")
    values = {"out_dir": str(out), "readme": args.readme, "update_readme": True, "force": args.force}
    run_notebook("05_report", out, values, args.kernel)
    return step_html(args)


def step_html(args: argparse.Namespace) -> int:
    out = run_dir(args, "full")
    if is_evidence(out):  # results/<run>/: the HTML beside its notebooks, nothing to copy
        for page in export_html(out, into=out):
            print(f"wrote {page}", file=sys.stderr)
        return 0
    for page in export_html(out):
        print(f"wrote {page}", file=sys.stderr)
    return report.main(["--out_dir", str(out), "--readme", args.readme, "--evidence_only"])


def step_phases(args: argparse.Namespace) -> int:
    out = run_dir(args, "full")
    checkpoint = out / "checkpoints" / "last.pt"
    return evaluate.main(["--checkpoint", str(checkpoint), "--phases", "standard", "--out", str(out / "phases.md")])


def step_export(args: argparse.Namespace) -> int:
    out = run_dir(args, "full")
    target = args.out or f"{out}-hf"
    return export.main(["--checkpoint", str(out / "checkpoints" / "best.pt"), "--out", target, "--dtype", args.dtype])


def step_space(args: argparse.Namespace) -> int:
    model = args.model_dir or f"{run_dir(args, 'full')}-hf"
    env = {
        "MODEL_DIR": str(model),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(args.port),
        "SPACE_DTYPE": args.dtype,
    }
    return launch([sys.executable, str(Path("space") / "app.py")], env, args.dry_run)


def step_space_load(args: argparse.Namespace) -> int:
    from . import space_load  # needs gradio_client, of the development tools (requirements-dev.txt)

    model = args.model_dir or f"{run_dir(args, 'full')}-hf"
    argv = ["--model_dir", str(model), "--clients", "8", "--requests", "3", "--dtype", args.dtype]
    return space_load.main([*argv, "--out", args.out])


def step_lab(args: argparse.Namespace) -> int:
    return launch([sys.executable, "-m", "jupyterlab", "notebooks"], None, args.dry_run)


STEPS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "sanity": (step_sanity, "the course's sanity run (200 steps, 124M) into out_sanity/, evidence in results/"),
    "plan": (
        step_plan,
        "what this machine does with the proven recipe (device, precision, compilation, micro-batch, "
        "each with its reason) and the time it takes here",
    ),
    "overnight": (step_overnight, "the proven recipe through notebook 04 into the run directory (again: it resumes)"),
    "report": (step_report, "notebook 05 (the README's results), then html: all a grader opens in results/<run>/"),
    "html": (step_html, "the run's executed notebooks as HTML, copied with the evidence into results/<run>/"),
    "phases": (step_phases, "the full-corpus loss of the run's last.pt at phases 0, 64, 128, 192, into phases.md"),
    "train": (step_train, "the course's reference full run, without notebooks (again: it resumes)"),
    "export": (step_export, "the run's best.pt as a Hugging Face model folder (RUN_DIR-hf)"),
    "space": (step_space, "the Gradio demo of the exported model, on http://127.0.0.1:PORT only"),
    "space-load": (step_space_load, "8 clients x 3 requests at once against the demo: results/space_load.md"),
    "lab": (step_lab, "the course notebooks in JupyterLab"),
    "data": (step_data, "download data/input.txt (sha256-checked) when it is missing"),
}


EVERY = tuple(STEPS)
RUNS = ("sanity", "train", "overnight")  # the steps that train
# the options of the steps, as data: (the steps that take it, its flags, argparse's keywords)
OPTIONS: list[tuple[tuple[str, ...], tuple[str, ...], dict[str, Any]]] = [
    (EVERY, ("--run-dir",), {"help": "the run directory (default: out/full; out_sanity for sanity; on Colab with "
                                     "Google Drive mounted, nanogpt-course/full on Drive)"}),
    (RUNS, ("-p",), {"nargs": 2, "action": "append", "default": [], "metavar": ("NAME", "VALUE"),
                     "help": "a training option, as often as needed: -p lr 6e-4 -p batch_size auto"}),
    (("sanity", "train"), ("--input_file",), {"default": TrainConfig.input_file, "help": "default: %(default)s"}),
    (("plan", "overnight"), ("--recipe",), {"default": "auto", "choices": recipes.CHOICES,
                                            "help": "auto (default): the proven recipe for this machine's device; "
                                                    "reference: the course's own, notebook 04's defaults"}),
    (("overnight", "report"), ("--kernel",), {"default": "python3", "help": "the Jupyter kernel (default: python3)"}),
    (("sanity", "report", "html"), ("--readme",), {"default": "README.md",
                                                   "help": "the README whose results it fills; results/ beside it"}),
    (("report",), ("--force",), {"action": "store_true",
                                 "help": "replace README results that reached the target with a run that did not"}),
    (("train",), ("--nproc",), {"type": int, "default": 1,
                                "help": "processes (GPUs) of one data-parallel run, through torchrun"}),
    (("plan",), ("--device",), {"default": "auto", "choices": DEVICE_CHOICES, "help": "default: this machine's"}),
    (("plan",), ("--no-measure",), {"action": "store_true", "help": "the plan only: time no steps of the model"}),
    (("export",), ("--out",), {"help": "the model folder (default: RUN_DIR-hf)"}),
    (("export",), ("--dtype",), {"default": "float32", "choices": ("float32", "float16", "bfloat16")}),
    (("space", "space-load"), ("--model-dir",), {"help": "the exported model folder (default: RUN_DIR-hf)"}),
    (("space", "space-load"), ("--dtype",), {"default": "float32",
                                              "choices": ("float32", "bfloat16"),
                                              "help": "the precision the app runs the model in (SPACE_DTYPE; "
                                                      "default: float32, the same text alone and in a batch)"}),
    (("space",), ("--port",), {"type": int, "default": 7860, "help": "default: %(default)s"}),
    (("space-load",), ("--out",), {"default": "results/space_load.md", "help": "default: %(default)s"}),
    (("space", "lab"), ("--dry-run",), {"action": "store_true", "help": "only print what would run"}),
    (("data",), ("--dest",), {"default": TrainConfig.input_file, "help": "default: %(default)s"}),
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanogpt",
        description="The course's workflow: train GPT-2 124M from scratch on tiny-shakespeare and hand in the proof.",
    )
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for name, (_, help_text) in STEPS.items():
        step = steps.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".")
        for takers, flags, keywords in OPTIONS:
            if name in takers:
                step.add_argument(*flags, **keywords)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, then run the step from the project folder, where the notebooks and their relative paths live."""
    args = build_parser().parse_args(argv)
    if not NOTEBOOKS.is_dir():
        raise UserError(
            f"no notebooks/ beside the library in {ROOT}: install the project with pip install -e . from its folder"
        )
    for name in PATH_OPTIONS:  # before leaving the folder they are relative to
        if getattr(args, name, None):
            setattr(args, name, str(in_project(getattr(args, name))))
    os.chdir(ROOT)
    return STEPS[args.step][0](args)


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
