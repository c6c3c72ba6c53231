# Thin wrappers: every target is also written out as a plain command in README.md (Windows has no make).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= out/full
KERNEL ?= nanogpt-course
PARAMS ?=
# make overnight: auto = the proven recipe for this machine's device (python -m nanogpt_lib.recipes); cpu, gpu,
# cpu-wsd, cpu-wsd-random; reference = the course's reference recipe (the defaults of notebook 04)
RECIPE ?= auto
NPROC ?= 1
# NPROC > 1: data-parallel over NPROC processes (GPUs) through torchrun; --batch_size is per process
TRAIN := $(if $(filter-out 1,$(NPROC)),$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC),$(PY)) -m nanogpt_lib.train
export PYTHONPATH :=

.PHONY: help setup setup-dev data sanity train kernel lab overnight phases report html test lint

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
	$(PY) -m nanogpt_lib.download --dest data/input.txt

sanity: setup data/input.txt  ## set up, then the reference sanity run (200 steps, 124M model) into out_sanity/ and results/sanity-<kind of machine>/
	$(PY) -m nanogpt_lib.train --input_file data/input.txt --out_dir out_sanity --steps 200 --batch_size 4 \
		--seq_len 128 --grad_accum 1 --lr 3e-4 --log_every 10 --save_every 100 --sample_every 100 --overwrite
	$(PY) -m nanogpt_lib.report --out_dir out_sanity --name sanity-$$($(PY) -m nanogpt_lib.device --kind) --evidence_only

train: setup data/input.txt  ## set up, then the reference full run into $(RUN_DIR) (re-running resumes; NPROC=N GPUs)
	$(TRAIN) --input_file data/input.txt --out_dir $(RUN_DIR) --steps 200000 --batch_size 8 \
		--seq_len 256 --grad_accum 4 --lr 3e-4 --log_every 50 --save_every 2000 --sample_every 2000 --resume

kernel: setup  ## register .venv as the Jupyter kernel "nanogpt-course" (for JupyterLab and papermill)
	$(PY) -m ipykernel install --user --name $(KERNEL) --display-name "Python (nanogpt-course)"

lab: kernel  ## open the course notebooks in JupyterLab
	$(VENV)/bin/jupyter lab notebooks/

overnight: kernel data/input.txt  ## the proven recipe (RECIPE=auto, or a name from python -m nanogpt_lib.recipes --help) through notebook 04 into $(RUN_DIR) (re-running resumes)
	mkdir -p $(RUN_DIR)
	recipe="$$($(PY) -m nanogpt_lib.recipes $(RECIPE) --papermill)" && \
	$(VENV)/bin/papermill notebooks/04_full_training.ipynb $(RUN_DIR)/04_full_training.ipynb -k $(KERNEL) \
		--log-output -p out_dir $(RUN_DIR) $$recipe $(PARAMS)

phases: setup  ## the full-corpus loss of $(RUN_DIR)'s last.pt at phases 0, 64, 128, 192, into $(RUN_DIR)/phases.md
	$(PY) -m nanogpt_lib.evaluate --checkpoint $(RUN_DIR)/checkpoints/last.pt --phases standard \
		--out $(RUN_DIR)/phases.md

report: kernel  ## notebook 05 on $(RUN_DIR) (the README's results), then make html: all a grader opens in results/<run>/
	$(VENV)/bin/papermill notebooks/05_report.ipynb $(RUN_DIR)/05_report.ipynb -k $(KERNEL) -p out_dir $(RUN_DIR) \
		-p update_readme True
	$(MAKE) html RUN_DIR=$(RUN_DIR)

html: setup  ## the executed notebooks in $(RUN_DIR) as HTML, in $(RUN_DIR)/html/, copied with them into results/<run>/
	$(VENV)/bin/jupyter nbconvert --to html --template lab --output-dir $(RUN_DIR)/html $(RUN_DIR)/*.ipynb
	$(PY) -m nanogpt_lib.report --out_dir $(RUN_DIR) --evidence_only

lint: setup-dev  ## ruff on the library and the tests
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup-dev lint data/input.txt  ## set up, lint, then run the test suite (JUNIT=1: its record in results/tests-<kind of machine>.xml)
	$(PY) -m pytest $(if $(JUNIT),--junitxml=results/tests-$$($(PY) -m nanogpt_lib.device --kind).xml)
	$(if $(JUNIT),sed -i 's|$(CURDIR)/||g' results/tests-$$($(PY) -m nanogpt_lib.device --kind).xml)  # paths relative to the project

# ---------------------------------------------------------------------- Hugging Face export and Space
EXPORT_DIR ?= $(RUN_DIR)-hf
DTYPE ?= float32
MODEL_DIR ?= $(EXPORT_DIR)
PORT ?= 7860

.PHONY: export space space-load

export: setup-dev  ## $(RUN_DIR)'s best.pt as a Hugging Face model folder in $(EXPORT_DIR) (DTYPE=float16 halves it)
	$(PY) -m nanogpt_lib.export --checkpoint $(RUN_DIR)/checkpoints/best.pt --out $(EXPORT_DIR) --dtype $(DTYPE)

space: setup-dev  ## the Gradio demo of the exported model in $(MODEL_DIR) on http://127.0.0.1:$(PORT) only
	MODEL_DIR=$(MODEL_DIR) GRADIO_SERVER_NAME=127.0.0.1 GRADIO_SERVER_PORT=$(PORT) $(PY) space/app.py

space-load: setup-dev  ## 8 clients x 3 requests at once against the app serving $(MODEL_DIR): results/space_load.md
	$(PY) -m nanogpt_lib.space_load --model_dir $(MODEL_DIR) --clients 8 --requests 3 --out results/space_load.md
