"""The ``nanogpt`` command: every step on the tiny model (or with --dry-run where it would start a server), the same
options everywhere, one-line errors, nothing run through a shell; on "Colab" (a stand-in google.colab module and a
stand-in Drive folder) the run directory lands on Drive and a second execution resumes it."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from nanogpt_lib import cli, overview
from nanogpt_lib.device import machine_kind
from nanogpt_lib.errors import EXIT_USER_ERROR, run_cli

from .conftest import ROOT, write_small_corpus

TINY = ["-p", "model", "tiny", "-p", "device", "cpu", "-p", "amp", "off", "-p", "batch_size", "2", "-p", "seq_len",
        "32", "-p", "grad_accum", "2", "-p", "log_every", "1", "-p", "save_every", "2", "-p", "sample_every", "2",
        "-p", "max_new_tokens", "8"]  # fmt: skip


def nanogpt(*argv: str) -> int:
    return run_cli(cli.main, list(argv))


@pytest.fixture
def at_root(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the command enters the project folder; the test's own folder comes back after


@pytest.mark.parametrize("step", list(cli.STEPS))
def test_every_step_has_help_and_the_shared_run_dir_option(step: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([step, "--help"])
    assert done.value.code == 0
    assert "--run-dir" in capsys.readouterr().out


def test_no_step_builds_a_shell_or_posix_command() -> None:
    tree = ast.parse((ROOT / "nanogpt_lib" / "cli.py").read_text(encoding="utf-8"))
    texts = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    assert not [t for t in texts if t.split(" ")[0] in ("make", "bash", "sh", "cp", "mkdir", "rm") or "/bin/" in t]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "subprocess.run"]
    assert calls and not [c for c in calls if any(k.arg == "shell" for k in c.keywords)]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["lab"], [sys.executable, "-m", "jupyterlab"]),
        (["space", "--model-dir", "out/m-hf", "--port", "7861"], [sys.executable, str(Path("space") / "app.py")]),
        (["train", "--nproc", "2", "--run-dir", "out/ddp"], [sys.executable, "-m", "torch.distributed.run"]),
    ],
)
def test_programs_start_from_this_python(argv, expected, monkeypatch, at_root) -> None:
    started = []
    monkeypatch.setattr(cli, "ensure_data", lambda path: None)
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **kw: started.append((cmd, kw)) or types.SimpleNamespace(returncode=0)
    )
    assert nanogpt(*argv) == 0
    ((command, keywords),) = started
    assert command[: len(expected)] == expected and "shell" not in keywords
    if argv[0] == "space":
        assert keywords["env"]["MODEL_DIR"] == "out/m-hf" and keywords["env"]["GRADIO_SERVER_PORT"] == "7861"


def test_dry_runs_only_print(capsys, monkeypatch, at_root) -> None:
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("a dry run started something"))
    assert nanogpt("lab", "--dry-run") == 0
    assert "-m jupyterlab" in capsys.readouterr().out
    assert nanogpt("space", "--dry-run", "--run-dir", "out/x") == 0
    assert "MODEL_DIR=out/x-hf" in capsys.readouterr().out


def test_space_load_and_plan_pass_their_options(monkeypatch, capsys, at_root) -> None:
    space_load = pytest.importorskip("nanogpt_lib.space_load")  # needs gradio_client (requirements-dev.txt)
    seen = {}
    monkeypatch.setattr(space_load, "main", lambda argv: seen.__setitem__("argv", argv) or 0)
    assert nanogpt("space-load", "--model-dir", "out/m-hf") == 0
    assert seen["argv"][:2] == ["--model_dir", "out/m-hf"] and "results/space_load.md" in seen["argv"]
    assert seen["argv"][seen["argv"].index("--dtype") + 1] == "float32"
    assert nanogpt("space-load", "--model-dir", "out/m-hf", "--dtype", "bfloat16") == 0
    assert seen["argv"][seen["argv"].index("--dtype") + 1] == "bfloat16"
    assert nanogpt("plan", "--recipe", "gpu", "--device", "cpu", "--no-measure") == 0
    assert "Micro-batch: 2 x 1024 tokens, 8 per step" in capsys.readouterr().out


def test_bad_input_is_one_line(capsys, tmp_path, at_root) -> None:
    assert nanogpt("phases", "--run-dir", str(tmp_path / "none")) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert nanogpt("overnight", "--run-dir", str(tmp_path / "r"), "-p", "no_such_option", "1") == EXIT_USER_ERROR
    assert "no_such_option" in capsys.readouterr().err


def test_data_keeps_a_verified_copy(course_file: Path, tmp_path: Path, at_root) -> None:
    dest = tmp_path / "input.txt"
    shutil.copy(course_file, dest)
    assert nanogpt("data", "--dest", str(dest)) == 0 and dest.read_bytes() == course_file.read_bytes()


def test_sanity_and_train_run_the_course_commands(tmp_path: Path, at_root) -> None:
    corpus = write_small_corpus(tmp_path)
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    sanity = tmp_path / "sanity"
    assert nanogpt("sanity", "--run-dir", str(sanity), "--input_file", str(corpus), "--readme", str(readme),
                   "-p", "model", "tiny", "-p", "steps", "2", "-p", "max_new_tokens", "4") == 0  # fmt: skip
    options = json.loads((sanity / "run_config.json").read_text())["train_config"]
    assert (options["batch_size"], options["seq_len"], options["lr"], options["steps"]) == (4, 128, 3e-4, 2)
    assert (tmp_path / "results" / f"sanity-{machine_kind()}" / "summary.json").is_file()
    full = tmp_path / "full"
    for steps in ("2", "3"):  # the second continues the first
        assert nanogpt("train", "--run-dir", str(full), "--input_file", str(corpus), "-p", "model", "tiny",
                       "-p", "steps", steps, "-p", "save_every", "1", "-p", "max_new_tokens", "4") == 0  # fmt: skip
    config = json.loads((full / "run_config.json").read_text())
    assert config["train_config"]["grad_accum"] == 4 and [r["step"] for r in config["resumes"]] == [2]


def stand_in_colab(patch: pytest.MonkeyPatch) -> None:
    """``import google.colab`` works, as on a Colab runtime."""
    google = sys.modules.get("google") or types.ModuleType("google")
    colab = types.ModuleType("google.colab")
    patch.setitem(sys.modules, "google", google)
    patch.setattr(google, "colab", colab, raising=False)
    patch.setitem(sys.modules, "google.colab", colab)


@pytest.fixture(scope="module")
def on_colab(tmp_path_factory) -> dict:
    """nanogpt overnight twice, then report, phases and export, on a "Colab" runtime whose Drive is mounted."""
    tmp = tmp_path_factory.mktemp("colab")
    drive = tmp / "drive" / "MyDrive"
    drive.mkdir(parents=True)
    corpus = write_small_corpus(tmp)
    readme = tmp / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    with pytest.MonkeyPatch.context() as patch:
        stand_in_colab(patch)
        patch.setenv(cli.DRIVE, str(drive))
        patch.chdir(ROOT)
        done = {"drive": drive, "readme": readme}
        for steps in ("2", "4"):
            done[f"overnight {steps}"] = nanogpt("overnight", "--recipe", "reference", *TINY,
                                                 "-p", "input_file", str(corpus), "-p", "steps", steps)  # fmt: skip
        done["report"] = nanogpt("report", "--readme", str(readme), "--force")
        (drive / "nanogpt-course" / "full" / "html" / "05_report.html").unlink()
        done["html"] = nanogpt("html", "--readme", str(readme))  # on its own: the HTML again, and the copy
        done["phases"] = nanogpt("phases")
    return done


def test_on_colab_the_run_lands_on_drive_and_a_second_execution_resumes(on_colab: dict) -> None:
    assert on_colab["overnight 2"] == 0 and on_colab["overnight 4"] == 0
    run = on_colab["drive"] / "nanogpt-course" / "full"
    log = (run / "logs" / "train.log").read_text()
    assert "Resumed from" in log and "at step 2" in log
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    executed = json.loads((run / "04_full_training.ipynb").read_text())
    earlier = next(c for c in executed["cells"] if "earlier-sessions" in c["metadata"].get("tags", []))
    shown = "".join("".join(o["text"]) for o in earlier["outputs"] if o["output_type"] == "stream")
    assert "Earlier sessions of this run: 1, up to step 2 " in shown  # the first session, before this one resumed
    assert "No checkpoint at" in shown and "Resumed from" not in shown
    assert any("image/png" in o.get("data", {}) for o in earlier["outputs"])  # its loss curve


def test_report_html_and_phases_follow_the_run(on_colab: dict) -> None:
    assert on_colab["report"] == 0 and on_colab["html"] == 0 and on_colab["phases"] == 0
    run = on_colab["drive"] / "nanogpt-course" / "full"
    assert {p.name for p in (run / "html").iterdir()} == {"04_full_training.html", "05_report.html"}
    results = on_colab["readme"].parent / "results" / "full"
    assert (results / "05_report.html").is_file() and (results / "train_metrics.csv").is_file()
    assert "phase" in (run / "phases.md").read_text()


def test_export_follows_the_run(on_colab: dict, tmp_path: Path) -> None:
    pytest.importorskip("transformers")  # which the export writes with: a development tool (requirements-dev.txt)
    with pytest.MonkeyPatch.context() as patch:
        stand_in_colab(patch)
        patch.setenv(cli.DRIVE, str(on_colab["drive"]))
        patch.chdir(ROOT)
        assert nanogpt("export", "--out", str(tmp_path / "hf")) == 0
    assert (tmp_path / "hf" / "config.json").is_file()


def test_off_drive_on_colab_it_says_the_run_would_be_lost(monkeypatch, capsys, tmp_path) -> None:
    stand_in_colab(monkeypatch)
    monkeypatch.setenv(cli.DRIVE, str(tmp_path / "not-mounted"))
    args = cli.build_parser().parse_args(["phases"])
    assert cli.run_dir(args, "full") == Path("out") / "full"
    assert "lost when the runtime disconnects" in capsys.readouterr().err


def test_html_of_committed_evidence_shows_the_sessions_before_the_saved_one(tmp_path: Path, at_root) -> None:
    """A run whose notebook 04 was saved before it showed earlier sessions gets them in its HTML, from its files."""
    run = tmp_path / "cpu-2core-bf16"
    shutil.copytree(ROOT / "results" / "cpu-2core-bf16", run)
    (run / "04_full_training.html").unlink()
    assert nanogpt("html", "--run-dir", str(run)) == 0
    page = (run / "04_full_training.html").read_text()
    assert "celltag_earlier-sessions" in page and "not executed in this session" in page
    start = page.index("Earlier sessions of this run: 7, steps 1 to 6,285")
    earlier = page[start : page.index("at step 6285 (12,871,680 tokens seen)", start)]  # the saved session begins
    assert "at step 5786 " in earlier and "Stopped by SIGINT after step 6285" in earlier
    assert "Target reached" not in earlier  # that came in the saved session, shown after
    assert not (run / "html").exists() and not (tmp_path / "results").exists()  # beside the notebooks, nothing copied
    assert overview.page_label(run / "04_full_training.html", 8) == "04 (all 8 sessions)"
    assert overview.page_label(ROOT / "results" / "h100-bf16" / "04_full_training.html", 1) == "04"
