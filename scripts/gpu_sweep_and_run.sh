#!/usr/bin/env bash
# On a CUDA GPU, in one go: the recipe sweep, then the real run of notebook 04 through papermill with the fastest
# recipe, the report (README blocks and results/), and the HTML. Everything worth keeping is copied under $OUT.
#
# For a GPU machine without internet whose Python lacks papermill and nbconvert, first, on a machine with a package
# index:  bash scripts/fetch_notebook_wheels.sh; mkdir -p .carry && cp data/input.txt .carry/
# then copy the repository (with .whl/ and .carry/) to the GPU machine and run:  bash scripts/gpu_sweep_and_run.sh
# A dry run on a CPU:  DEVICE=cpu SWEEP_PLAN=plan.yaml RUN_PARAMS="-p model tiny ..." bash scripts/gpu_sweep_and_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/device}
DEVICE=${DEVICE:-cuda}
SWEEP_PLAN=${SWEEP_PLAN:-params/sweep_h100.yaml}
SWEEP_ARGS=${SWEEP_ARGS:---compile --time_cap_s 45}
SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-300}
RUN_PARAMS=${RUN_PARAMS:-}
mkdir -p "$OUT" out results data
exec > >(tee "$OUT/device.log") 2>&1

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
[ -f .carry/input.txt ] && cp .carry/input.txt data/input.txt
{ date -u; nvidia-smi 2>/dev/null; python3 -c "import torch; print('torch', torch.__version__)"; } | tee "$OUT/env.txt"

echo "== sweep"
timeout "$SWEEP_TIMEOUT" python3 -m nanogpt_lib.sweep --plan "$SWEEP_PLAN" --out results/sweep.md \
  --best out/best_recipe.yaml --device "$DEVICE" $SWEEP_ARGS
cp results/sweep.md "$OUT/" 2>/dev/null
if [ ! -f out/best_recipe.yaml ]; then echo "no trial reached the target: no full run"; exit 0; fi
cp out/best_recipe.yaml "$OUT/"

echo "== the full run: notebook 04 through papermill"
RUN_DIR=out/${RUN_NAME:-gpu-bf16}
mkdir -p "$RUN_DIR"
python3 -m ipykernel install --user --name nanogpt-course --display-name "Python (nanogpt-course)" >/dev/null
python3 -m papermill notebooks/04_full_training.ipynb "$RUN_DIR/04_full_training.ipynb" -k nanogpt-course \
  -f out/best_recipe.yaml -p out_dir "$RUN_DIR" -p resume False -p overwrite True -p device "$DEVICE" \
  -p log_every 10 -p save_every 0 -p sample_every 0 -p extra_prompts 'ROMEO:\n|First Citizen:\n' $RUN_PARAMS \
  --log-output || exit 1

echo "== HTML, then the report (README blocks and results/$(basename "$RUN_DIR")/)"
python3 -m jupyter nbconvert --to html --template lab "$RUN_DIR/04_full_training.ipynb" --output-dir "$RUN_DIR/html" \
  || exit 1
python3 -m papermill notebooks/05_report.ipynb "$RUN_DIR/05_report.ipynb" -k nanogpt-course -p out_dir "$RUN_DIR" \
  -p readme README.md || exit 1
tar czf "$OUT/results.tgz" results README.md
ls -la results
