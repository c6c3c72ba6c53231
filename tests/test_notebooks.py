"""The course notebooks, executed headless by papermill with tiny parameters, then exported to HTML and rendered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pm = pytest.importorskip("papermill")

from nanogpt_lib import runlog  # noqa: E402

from .conftest import ROOT, write_small_corpus  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
TINY_RUN = {"model": "tiny", "device": "cpu", "steps": 4, "batch_size": 2, "seq_len": 32, "grad_accum": 2,
            "log_every": 1, "save_every": 2, "sample_every": 2, "max_new_tokens": 8}  # fmt: skip


def execute(name: str, out: Path, **parameters) -> dict:
    pm.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(out / f"{name}.ipynb"), parameters=parameters,
        kernel_name="python3", progress_bar=False,
    )  # fmt: skip
    return json.loads((out / f"{name}.ipynb").read_text(encoding="utf-8"))


def text_of(nb: dict) -> str:
    """Every text output of an executed notebook, joined."""
    parts = []
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                parts.append("".join(output["text"]))
            for mime in ("text/plain", "text/html", "text/markdown"):
                value = output.get("data", {}).get(mime)
                if value:
                    parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


def pngs_of(nb: dict) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def executed(tmp_path_factory, course_file: Path) -> dict:
    """All five notebooks run once, in order, on a temporary run directory and README."""
    tmp = tmp_path_factory.mktemp("notebooks")
    corpus = write_small_corpus(tmp)
    readme = tmp / "README.md"
    readme.write_text((ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    run = tmp / "run"
    nbs = {
        # the course file as a student names it: relative to the project folder, which the notebooks enter
        "01": execute("01_tokenization", tmp, input_file=str(course_file.relative_to(ROOT))),
        "02": execute("02_model_124m", tmp, input_file=str(corpus)),
        "03": execute("03_sanity_run", tmp, input_file=str(corpus), out_dir=str(tmp / "sanity"), **TINY_RUN),
        "04": execute("04_full_training", tmp, input_file=str(corpus), out_dir=str(run), **TINY_RUN),
    }
    # force: the README holds a run that reached the target, which a tiny run may replace only when told to
    nbs["05"] = execute("05_report", tmp, out_dir=str(run), readme=str(readme), update_readme=True, force=True)
    return {"dir": tmp, "run": run, "readme": readme, "corpus": corpus, "nbs": nbs}


def test_notebooks_are_stored_without_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        assert all(not c.get("outputs") and not c.get("execution_count") for c in nb["cells"]), path.name
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged parameters"


def test_executed_notebooks_show_no_folder_of_the_machine(executed) -> None:
    for key, nb in executed["nbs"].items():  # they are handed in, and committed to results/
        assert str(ROOT) not in text_of(nb), key


def test_tokenization_notebook(executed) -> None:
    out = text_of(executed["nbs"]["01"])
    assert "338025" in out and "1115394" in out
    assert pngs_of(executed["nbs"]["01"]) >= 1


def test_model_notebook(executed) -> None:
    out = text_of(executed["nbs"]["02"])
    assert "parameters: 124,439,808" in out and "sum of rows: 124,439,808" in out
    loss = float(out.split("loss at init: ")[1].split()[0])
    assert abs(loss - 10.82) < 0.3
    assert "earlier positions, largest change: 0.0" in out


def test_training_notebooks_write_a_run_and_a_live_plot(executed) -> None:
    for key in ("03", "04"):
        nb = executed["nbs"][key]
        assert pngs_of(nb) >= 1 and "Training complete." in text_of(nb)
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                       for c in nb["cells"] for o in c.get("outputs", []))  # fmt: skip
    summary = json.loads((executed["run"] / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["model"] == "tiny"


def test_rerunning_the_training_notebook_resumes(executed) -> None:
    again = executed["dir"] / "again"
    again.mkdir()
    params = {**TINY_RUN, "steps": 6}
    nb = execute("04_full_training", again, input_file=str(executed["corpus"]), out_dir=str(executed["run"]), **params)
    assert "Resumed from" in text_of(nb) and "at step 4" in text_of(nb)
    assert json.loads((executed["run"] / "summary.json").read_text())["steps"] == 6


def test_a_run_at_its_target_measures_its_phases_and_one_short_of_it_does_not(executed) -> None:
    assert "Not at the target (completed)" in text_of(executed["nbs"]["04"])
    assert not (executed["run"] / "phases.md").exists()
    reached = executed["dir"] / "reached"
    reached.mkdir()
    run = reached / "run"
    nb = execute("04_full_training", reached, input_file=str(executed["corpus"]), out_dir=str(run),
                 **{**TINY_RUN, "target_loss": 11.5})  # fmt: skip
    assert json.loads((run / "summary.json").read_text())["status"] == "target_reached"
    losses = runlog.read_phase_table(run / "phases.md")  # phase 0 and a quarter, half, three quarters of 32 on
    assert losses is not None and sorted(losses) == [0, 8, 16, 24] and "| 24 |" in text_of(nb)
    assert "--phases 0,8,16,24" in (run / "phases.md").read_text()


def test_a_misspelt_parameter_fails_with_a_clear_message(executed) -> None:
    bad = executed["dir"] / "bad"
    bad.mkdir()
    with pytest.raises(pm.PapermillExecutionError, match="unknown training option.*stpes"):
        execute("04_full_training", bad, input_file=str(executed["corpus"]), out_dir=str(bad / "run"), stpes=3)
    assert not (bad / "run").exists()


def test_report_notebook_fills_the_readme(executed) -> None:
    readme = executed["readme"].read_text(encoding="utf-8")
    name = executed["run"].name
    assert f"(results/{name}/loss_curve.png)" in readme and "Training complete." in readme
    assert (executed["readme"].parent / "results" / name / "loss_curve.png").is_file()
    out = text_of(executed["nbs"]["05"])
    assert "A sample from" in out and "ROMEO:" in out


def test_html_export_renders_in_a_browser(executed) -> None:
    """nbconvert's lab template, then headless Chromium: the loss plot is there, no widget error."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    html_dir = executed["dir"] / "html"
    html_dir.mkdir()
    names = ("01_tokenization", "02_model_124m", "03_sanity_run", "04_full_training", "05_report")
    for name in names:
        body, _ = exporter.from_filename(str(executed["dir"] / f"{name}.ipynb"))
        assert "data:image/png;base64" in body
        (html_dir / f"{name}.html").write_text(body, encoding="utf-8")

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    page = (html_dir / "04_full_training.html").as_uri()
    shot = html_dir / "04.png"
    browse = lambda *extra: subprocess.run(  # noqa: E731
        [chromium, *flags, f"--user-data-dir={html_dir / 'profile'}", *extra, page],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    browse("--window-size=1200,2400", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 20_000
    dom = browse("--dump-dom").stdout
    assert dom.count('src="data:image/png;base64') >= 1
    assert "Error displaying widget" not in dom
    assert "Training complete." in dom


# Where the training notebooks' parameters cells deliberately differ from the TrainConfig defaults (and from
# LiveProgress's for the notebook-only parameters). Any other value must be the default, so that a default changed
# in config.py cannot leave a notebook training with the old one.
PARAMETER_DIFFERENCES: dict[str, dict[str, object]] = {
    "03_sanity_run": {
        # the reference sanity run (make sanity): 200 short steps of the 124M model, in a run directory of its own
        "out_dir": "out/sanity_notebook",
        "steps": 200,
        "batch_size": 4,
        "seq_len": 128,
        "grad_accum": 1,
        "log_every": 10,
        "save_every": 100,
        "sample_every": 100,
        "max_new_tokens": 60,  # short samples: they only show that text comes out
        "overwrite": True,  # re-running the notebook starts the sanity run afresh
        "live_every_s": 10.0,  # a run of minutes: the plot is redrawn more often
    },
    "04_full_training": {
        "out_dir": "out/full",  # the run directory of make train and make overnight
        "resume": True,  # re-running the notebook continues the run
    },
}
# Notebook 04 shows every option; notebook 03 only those the sanity run changes, plus a few a reader may edit.
LISTS_EVERY_OPTION = {"03_sanity_run": False, "04_full_training": True}


def parameters_cell(name: str) -> dict[str, object]:
    """The assignments of a notebook's parameters cell, each a literal (anything else fails the test)."""
    import ast

    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
    source = "".join(next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))["source"])
    values: dict[str, object] = {}
    for statement in ast.parse(source).body:
        assert isinstance(statement, ast.Assign) and len(statement.targets) == 1, ast.unparse(statement)
        target = statement.targets[0]
        assert isinstance(target, ast.Name) and target.id not in values, ast.unparse(statement)
        values[target.id] = ast.literal_eval(statement.value)
    return values


@pytest.mark.parametrize("name", sorted(PARAMETER_DIFFERENCES))
def test_training_notebook_parameters_match_the_defaults(name: str) -> None:
    import dataclasses
    import inspect

    from nanogpt_lib.config import TrainConfig
    from nanogpt_lib.notebook import NOTEBOOK_ONLY_PARAMETERS, LiveProgress

    live = inspect.signature(LiveProgress).parameters
    notebook_only = {"progress_bar": live["progress_bar"].default, "live_every_s": live["every_s"].default}
    assert set(notebook_only) == NOTEBOOK_ONLY_PARAMETERS
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)} | notebook_only
    differences = PARAMETER_DIFFERENCES[name]
    assert set(differences) <= set(defaults), f"not an option: {sorted(set(differences) - set(defaults))}"
    assert not [k for k, v in differences.items() if v == defaults[k]], "a listed difference is the default now"

    cell = parameters_cell(name)
    assert set(cell) <= set(defaults), f"{name}: unknown parameters {sorted(set(cell) - set(defaults))}"
    required = set(defaults) if LISTS_EVERY_OPTION[name] else set(differences)
    assert required <= set(cell), f"{name}: missing parameters {sorted(required - set(cell))}"
    expected = {k: differences.get(k, defaults[k]) for k in cell}
    drift = {k: (v, expected[k]) for k, v in cell.items() if (type(v), v) != (type(expected[k]), expected[k])}
    assert not drift, f"{name}: parameters cell values (notebook, expected) that are not the defaults: {drift}"
