#!/usr/bin/env bash
# On one CUDA GPU, in one go and within a time budget: the real run of notebook 04 (params/gpu-124m.yaml) through
# papermill, its HTML and report (README blocks and results/<run name>/), the training-step bench against
# transformers, then the moonshot sweep (params/sweep_h100.yaml) in the time that is left. The most important part
# comes first, so a budget that runs out costs the least. What it produced is packed into $OUT/results.tgz after
# every part (results/ and README.md), with the full log in $OUT/device.log.
#
# For a GPU machine without internet whose Python lacks papermill and nbconvert, first, on a machine with a package
# index:  bash scripts/fetch_notebook_wheels.sh; mkdir -p .carry && cp data/input.txt .carry/
# then copy the repository (with .whl/ and .carry/) to the GPU machine and run:  bash scripts/gpu_sweep_and_run.sh
# A dry run on a CPU, tiny model:  DEVICE=cpu NO_WHEELS=1 GPU_TAG=cpu-dry BUDGET_S=300 \
#   RUN_PARAMS="-p model tiny -p steps 30 -p batch_size 4 -p seq_len 64 -p compile False" \
#   BENCH_ARGS="--model tiny --batch_size 4 --seq_len 64" REFERENCE_BENCH_ARGS="--model tiny --grad_accum 2" \
#   SWEEP_PLAN=plan.yaml SWEEP_ARGS="--token_cap 20000" bash scripts/gpu_sweep_and_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET_S=${BUDGET_S:-560}  # seconds for all of it; each part gets what is left, the sweep last
PARTS=${PARTS:-run bench sweep}  # which parts to run, e.g. PARTS=run for the real run, its HTML and report alone
OUT=${OUT:-out/device}
DEVICE=${DEVICE:-cuda}
RUN_PARAMS=${RUN_PARAMS:-}
BENCH_ARGS=${BENCH_ARGS:---model gpt2-124m --batch_size 16 --seq_len 1024 --compile}
REFERENCE_BENCH_ARGS=${REFERENCE_BENCH_ARGS:---model gpt2-124m --batch_size 8 --seq_len 256 --grad_accum 4}
REFERENCE_RUN_ARGS=${REFERENCE_RUN_ARGS:-}
SWEEP_PLAN=${SWEEP_PLAN:-params/sweep_h100.yaml}
SWEEP_ARGS=${SWEEP_ARGS:---compile --token_cap 8000000 --time_cap_s 25}
mkdir -p "$OUT" out results data
exec > >(tee "$OUT/device.log") 2>&1

left() { echo $((BUDGET_S - ($(date +%s) - START))); }
upto() { local s=$(($(left) - $1)); echo $((s > 10 ? s : 10)); }  # a part's time limit: what is left, less $1 s
pack() { tar czf "$OUT/results.tgz" results README.md params; echo "== packed after $1 ($(left) s of the budget left)"; }

if [ -z "${NO_WHEELS:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site JUPYTER_PATH=/tmp/site/share/jupyter  # nbconvert's templates live there
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
[ -f .carry/input.txt ] && cp .carry/input.txt data/input.txt
{ date -u; nvidia-smi 2>/dev/null; python3 -c "import torch; print('torch', torch.__version__)"; } | tee "$OUT/env.txt"
GPU_TAG=${GPU_TAG:-$(python3 -c "
import torch
name = torch.cuda.get_device_name() if torch.cuda.is_available() else ''
print(next((t.lower() for t in ('H200', 'H100', 'A100', 'L4') if t in name), 'gpu'))")}
RUN_DIR=out/${RUN_NAME:-$GPU_TAG-bf16}
echo "== GPU tag $GPU_TAG, run directory $RUN_DIR"

[[ " $PARTS " == *" run "* ]] && {
echo "== the real run: notebook 04 through papermill"
mkdir -p "$RUN_DIR"
python3 -m ipykernel install --user --name nanogpt-course --display-name "Python (nanogpt-course)" >/dev/null
timeout "$(upto "${REPORT_RESERVE_S:-120}")" python3 -m papermill notebooks/04_full_training.ipynb \
  "$RUN_DIR/04_full_training.ipynb" -k nanogpt-course -f params/gpu-124m.yaml -p out_dir "$RUN_DIR" -p resume False -p overwrite True \
  -p device "$DEVICE" $RUN_PARAMS --log-output
rc=$?
echo "== notebook 04 exit status $rc"
if [ "$rc" != 124 ] && [ ! -f "$RUN_DIR/summary.json" ]; then  # the notebook tools failed: the run without them
  echo "== no summary.json: the same run through the CLI"
  timeout "$(upto "${REPORT_RESERVE_S:-120}")" python3 -m nanogpt_lib.train --config params/gpu-124m.yaml --out_dir "$RUN_DIR" \
    --device "$DEVICE" --overwrite
fi
cp "$RUN_DIR/logs/train.log" "$OUT/train.log" 2>/dev/null

echo "== HTML, then the report (README blocks and results/$(basename "$RUN_DIR")/)"
python3 -m nbconvert --to html --template lab "$RUN_DIR/04_full_training.ipynb" --output-dir "$RUN_DIR/html"
python3 -m papermill notebooks/05_report.ipynb "$RUN_DIR/05_report.ipynb" -k nanogpt-course -p out_dir "$RUN_DIR" \
  -p readme README.md -p update_readme True
echo "== report exit status $?"
pack report
}

[[ " $PARTS " == *" bench "* ]] && {
echo "== bench: ours against transformers at the run's shape, then at the reference full run's shape"
timeout "$(upto 60)" python3 -m nanogpt_lib.bench --device "$DEVICE" --amp bf16 $BENCH_ARGS --repeats 5 \
  --steps 5 --warmup 3 --out "results/bench_${GPU_TAG}.md"
timeout "$(upto 45)" python3 -m nanogpt_lib.bench --device "$DEVICE" --amp bf16 $REFERENCE_BENCH_ARGS --repeats 5 --steps 3 --warmup 2 --out "results/bench_${GPU_TAG}_reference_run.md"
echo "== the reference full command for 20 steps: its peak GPU memory (summary.json, peak_gpu_memory_gib)"
timeout "$(upto 40)" python3 -m nanogpt_lib.train --input_file data/input.txt --out_dir out/reference-memory --steps 20 \
  --batch_size 8 --seq_len 256 --grad_accum 4 --lr 3e-4 --log_every 10 --save_every 0 --sample_every 0 \
  --max_new_tokens 1 --device "$DEVICE" --overwrite $REFERENCE_RUN_ARGS \
  && cp out/reference-memory/summary.json "results/reference_run_${GPU_TAG}_summary.json"
pack bench
}

[[ " $PARTS " == *" sweep "* ]] && {
echo "== the moonshot sweep, in the time left"
timeout "$(upto 10)" python3 -m nanogpt_lib.sweep --plan "$SWEEP_PLAN" --out "results/sweep_${GPU_TAG}.md" \
  --json "$OUT/sweep.json" --device "$DEVICE" $SWEEP_ARGS
echo "== sweep exit status $?"
pack sweep
}
