# Thin wrappers: each workflow target is one call of the nanogpt command (python -m nanogpt_lib), which runs the
# same on Windows, macOS and Colab without make; the targets here also set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NANOGPT := $(PY) -m nanogpt_lib
RUN_DIR ?= out/full
KERNEL ?= python3
PARAMS ?=
# make overnight: auto = the proven recipe for this machine's device (make plan says which); cpu, gpu,
# cpu-wsd, cpu-wsd-random; reference = the course's reference recipe (the defaults of notebook 04)
RECIPE ?= auto
# make train NPROC=N: data-parallel over N processes (GPUs) through torchrun; --batch_size is per process
NPROC ?= 1
export PYTHONPATH :=

.PHONY: help setup setup-dev data sanity train plan lab overnight phases report html test lint

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt -e .
	if [ -d .git ]; then $(VENV)/bin/nbstripout --install; fi  # outputs saved in JupyterLab stay out of commits
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

setup: $(VENV)/.runtime  ## create .venv and install the runtime dependencies and nanogpt_lib

setup-dev: $(VENV)/.dev  ## setup, plus the test and lint tools

data: data/input.txt  ## download data/input.txt when it is missing (needs internet; otherwise copy the course file there)

data/input.txt: | $(VENV)/.runtime
	$(NANOGPT) data --dest data/input.txt

sanity: setup data/input.txt  ## set up, then the reference sanity run (200 steps, 124M model) into out_sanity/ and results/sanity-<kind of machine>/
	$(NANOGPT) sanity

train: setup data/input.txt  ## set up, then the reference full run into $(RUN_DIR) (re-running resumes; NPROC=N GPUs)
	$(NANOGPT) train --run-dir $(RUN_DIR) --nproc $(NPROC)

plan: setup  ## what this machine does with the proven recipe (RECIPE=...), each choice with its reason, and the time it takes
	$(NANOGPT) plan --recipe $(RECIPE)

lab: setup  ## open the course notebooks in JupyterLab
	$(NANOGPT) lab

overnight: setup data/input.txt  ## the proven recipe (RECIPE=auto, or a name from nanogpt plan --help) through notebook 04 into $(RUN_DIR) (re-running resumes)
	$(NANOGPT) overnight --run-dir $(RUN_DIR) --recipe $(RECIPE) --kernel $(KERNEL) $(PARAMS)

phases: setup  ## the full-corpus loss of $(RUN_DIR)'s last.pt at phases 0, 64, 128, 192, into $(RUN_DIR)/phases.md
	$(NANOGPT) phases --run-dir $(RUN_DIR)

report: setup  ## notebook 05 on $(RUN_DIR) (the README's results), then make html: all a grader opens in results/<run>/
	$(NANOGPT) report --run-dir $(RUN_DIR) --kernel $(KERNEL)

html: setup  ## the executed notebooks in $(RUN_DIR) as HTML, in $(RUN_DIR)/html/, copied with them into results/<run>/
	$(NANOGPT) html --run-dir $(RUN_DIR)

lint: setup-dev  ## ruff on the library and the tests
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup-dev lint data/input.txt  ## set up, lint, then run the test suite (JUNIT=1: its record in results/tests-<kind of machine>.xml)
	$(PY) -m pytest $(if $(JUNIT),--junitxml=results/tests-$$($(PY) -m nanogpt_lib.device --kind).xml)
	$(if $(JUNIT),sed -i 's|$(CURDIR)/||g' results/tests-$$($(PY) -m nanogpt_lib.device --kind).xml)  # paths relative to the project
	$(if $(JUNIT),$(PY) -m nanogpt_lib.report --overview)  # the README's overview shows the new record

# ---------------------------------------------------------------------- Hugging Face export and Space
EXPORT_DIR ?= $(RUN_DIR)-hf
DTYPE ?= float32
MODEL_DIR ?= $(EXPORT_DIR)
PORT ?= 7860

.PHONY: export space space-load

export: setup-dev  ## $(RUN_DIR)'s best.pt as a Hugging Face model folder in $(EXPORT_DIR) (DTYPE=float16 halves it)
	$(NANOGPT) export --run-dir $(RUN_DIR) --out $(EXPORT_DIR) --dtype $(DTYPE)

space: setup-dev  ## the Gradio demo of the exported model in $(MODEL_DIR) on http://127.0.0.1:$(PORT) only
	$(NANOGPT) space --model-dir $(MODEL_DIR) --port $(PORT)

space-load: setup-dev  ## 8 clients x 3 requests at once against the app serving $(MODEL_DIR): results/space_load.md
	$(NANOGPT) space-load --model-dir $(MODEL_DIR)
