#!/usr/bin/env bash
# On one CUDA GPU, in one go and within a time budget, the parts named by PARTS (default: cards sanity recipe), in
# this order: cards: the GPU recipe for 200 steps as a 16 GB card, an 8 GB card and a T4 (compute capability 7.5,
# 15 GB, eager) would run it (scripts/emulate_card.py), into results/gpu-cards/; sanity: `make sanity` (200 steps, under a minute on a GPU), whose evidence fills the README's GPU cell of the
# first command; recipe: the recipe sweep (params/sweep_gpu.yaml, every trial on the whole corpus to the target or 800 steps), then
# the real run of its winner (written to params/gpu-124m-fast.yaml) through notebook 04 into out/<gpu>-fast;
# run: the real run of the committed GPU recipe (params/gpu-124m.yaml); each real run with its phase table, HTML and
# report (README blocks and results/<run name>/); bench: the training step against transformers; sweep: the moonshot
# plan (params/sweep_h100.yaml) in the time that is left. The most important part comes first, so a budget that runs
# out costs the least. What it produced is packed into $OUT/results.tgz after
# every part (results/ and README.md), with the full log in $OUT/device.log.
#
# For a GPU machine without internet whose Python lacks papermill and nbconvert, first, on a machine with a package
# index:  bash scripts/fetch_notebook_wheels.sh; mkdir -p .carry && cp data/input.txt .carry/
# then copy the repository (with .whl/ and .carry/) to the GPU machine and run:  bash scripts/gpu_sweep_and_run.sh
# A dry run on a CPU, tiny model:  PARTS=recipe DEVICE=cpu NO_WHEELS=1 GPU_TAG=cpu-dry BUDGET_S=300 \
#   RUN_PARAMS="-p model tiny -p steps 30 -p batch_size 4 -p seq_len 64 -p tokens_per_step 256 -p compile False" \
#   BENCH_ARGS="--model tiny --batch_size 4 --seq_len 64" REFERENCE_BENCH_ARGS="--model tiny --grad_accum 2" \
#   SWEEP_PLAN=plan.yaml SWEEP_ARGS="--token_cap 20000" bash scripts/gpu_sweep_and_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET_S=${BUDGET_S:-560}  # seconds for all of it; each part gets what is left, the sweep last
PARTS=${PARTS:-cards sanity recipe}  # which parts, in this order: cards (the students' cards emulated), sanity, recipe
# (sweep, then its winner's real run), run
# (the committed GPU recipe params/gpu-124m.yaml), bench, sweep (the moonshot plan); e.g. PARTS="recipe bench"
OUT=${OUT:-out/device}
DEVICE=${DEVICE:-cuda}
RUN_PARAMS=${RUN_PARAMS:-}
BENCH_ARGS=${BENCH_ARGS:---model gpt2-124m --batch_size 16 --seq_len 1024 --compile}
REFERENCE_BENCH_ARGS=${REFERENCE_BENCH_ARGS:---model gpt2-124m --batch_size 8 --seq_len 256 --grad_accum 4}
REFERENCE_RUN_ARGS=${REFERENCE_RUN_ARGS:-}
SWEEP_PLAN=${SWEEP_PLAN:-params/sweep_h100.yaml}
SWEEP_ARGS=${SWEEP_ARGS:---compile --token_cap 8000000 --time_cap_s 25}
RECIPE_PLAN=${RECIPE_PLAN:-params/sweep_gpu.yaml}  # the recipe sweep; its winner is written to RECIPE_BEST and trained
RECIPE_BEST=${RECIPE_BEST:-params/gpu-124m-fast.yaml}
RECIPE_CAP_TOKENS=${RECIPE_CAP_TOKENS:-13107200}  # 800 steps of 16 x 1,024 tokens
RECIPE_ARGS=${RECIPE_ARGS:---compile --time_cap_s 60}
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

# The real run of a parameter file through notebook 04 (or the CLI if the notebook tools fail), its HTML and the
# report (README blocks and results/<run name>/):  real_run PARAMS_FILE RUN_DIR
real_run() {
local params=$1 run_dir=$2
echo "== the real run of $params: notebook 04 through papermill, into $run_dir"
mkdir -p "$run_dir"
python3 -m ipykernel install --user --name nanogpt-course --display-name "Python (nanogpt-course)" >/dev/null
timeout "$(upto "${REPORT_RESERVE_S:-120}")" python3 -m papermill notebooks/04_full_training.ipynb \
  "$run_dir/04_full_training.ipynb" -k nanogpt-course -f "$params" -p out_dir "$run_dir" -p resume False -p overwrite True \
  -p device "$DEVICE" $RUN_PARAMS --log-output
rc=$?
echo "== notebook 04 exit status $rc"
if [ "$rc" != 124 ] && [ ! -f "$run_dir/summary.json" ]; then  # the notebook tools failed: the run without them
  echo "== no summary.json: the same run through the CLI"
  timeout "$(upto "${REPORT_RESERVE_S:-120}")" python3 -m nanogpt_lib.train --config "$params" --out_dir "$run_dir" \
    --device "$DEVICE" --overwrite
fi
cp "$run_dir/logs/train.log" "$OUT/$(basename "$run_dir").train.log" 2>/dev/null
if [ ! -f "$run_dir/phases.md" ]; then  # notebook 04 measured them if the run reached its target
  echo "== the full-corpus loss of its last.pt at phases 0, 64, 128, 192 (make phases)"
  timeout "$(upto 60)" python3 -m nanogpt_lib.evaluate --checkpoint "$run_dir/checkpoints/last.pt" \
    --phases standard --out "$run_dir/phases.md" --device "$DEVICE"
fi

echo "== HTML, then the report (README blocks and results/$(basename "$run_dir")/)"
python3 -m nbconvert --to html --template lab "$run_dir/04_full_training.ipynb" --output-dir "$run_dir/html"
python3 -m papermill notebooks/05_report.ipynb "$run_dir/05_report.ipynb" -k nanogpt-course -p out_dir "$run_dir" \
  -p readme README.md -p update_readme True
rc=$?
echo "== report exit status $rc"
if [ "$rc" != 0 ]; then  # e.g. a run short of the target does not replace the README's run: its evidence still counts
  python3 -m nanogpt_lib.report --out_dir "$run_dir" --evidence_only
  echo "== evidence only: exit status $?"
fi
}

[[ " $PARTS " == *" cards "* ]] && {
echo "== the students' cards, emulated: params/gpu-124m.yaml for 200 steps with the memory capped, and as a 7.5 card"
mkdir -p results/gpu-cards
for card in "16gb --memory_gib 16" "8gb --memory_gib 8" "t4-eager --memory_gib 15 --capability 7.5"; do
  set -- $card; name=$1; shift
  eager=$([ "$name" = t4-eager ] && echo "--compile false")
  timeout "$(upto 60)" python3 scripts/emulate_card.py "$@" -- --config params/gpu-124m.yaml --steps 200 \
    --out_dir "out/as-$name" --overwrite --device "$DEVICE" --log_every 10 --save_every 0 --sample_every 0 \
    --max_new_tokens 1 $eager
  echo "== card $name: exit status $?"
  for f in logs/train.log logs/train_metrics.csv run_config.json summary.json; do
    cp "out/as-$name/$f" "results/gpu-cards/$name.$(basename "$f")" 2>/dev/null
  done
done
pack cards
}

[[ " $PARTS " == *" sanity "* ]] && {
echo "== make sanity: 200 steps of the 124M model into out_sanity/, its evidence in results/sanity-<kind of machine>/"
if command -v make >/dev/null; then  # the Makefile's own command, with this Python and no set-up (no package index)
  timeout "$(upto 480)" make -o setup -o data/input.txt sanity PY=python3
  echo "== sanity exit status $?"
else
  echo "== no make on this machine: no sanity run"
fi
pack sanity
}

[[ " $PARTS " == *" recipe "* ]] && {
echo "== the recipe sweep: every trial on the whole corpus until the target or $RECIPE_CAP_TOKENS tokens"
rm -f "$RECIPE_BEST"
timeout "$(upto "${RECIPE_RESERVE_S:-200}")" python3 -m nanogpt_lib.sweep --plan "$RECIPE_PLAN" \
  --out "results/sweep_${GPU_TAG}_recipe.md" --best "$RECIPE_BEST" --device "$DEVICE" --token_cap "$RECIPE_CAP_TOKENS" \
  $RECIPE_ARGS
echo "== recipe sweep exit status $?"
pack recipe
if [ -f "$RECIPE_BEST" ]; then
  real_run "$RECIPE_BEST" "out/${GPU_TAG}-fast"
else
  echo "== no trial reached the target with a model that knows the text at a mid phase: no real run of a new recipe"
fi
pack recipe-run
}

[[ " $PARTS " == *" run "* ]] && {
real_run params/gpu-124m.yaml "$RUN_DIR"
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
