#!/usr/bin/env bash
# Download, here (with a package registry), the wheels the GPU machine lacks for the papermill run: papermill,
# nbclient, ipykernel, nbconvert and what they need, for its Python 3.12 on x86-64, into .whl/ (gitignored).
# Packages its image already has (torch, tiktoken, pandas, matplotlib, pyyaml, psutil, ...) are left out so
# that nothing there is shadowed. Then carry .whl in the device call (see scripts/gpu_issue6.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  papermill nbclient nbformat ipykernel nbconvert
# already in the device image (its KINDS.md list): keep theirs
for name in attrs certifi charset_normalizer click idna jinja2 markupsafe packaging platformdirs psutil pygments \
  python_dateutil pyyaml PyYAML requests six tqdm typing_extensions urllib3 numpy; do
  rm -f .whl/"${name}"-*.whl
done
ls .whl | wc -l
du -sh .whl
