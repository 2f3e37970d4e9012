#!/usr/bin/env bash
# Downloads into .whl/ (ignored by git) the wheels that fmjax needs on the GPU machine and its
# image lacks, for its Python 3.12 on x86-64 Linux, and copies Tiny Shakespeare there (nothing can
# be downloaded on that machine): run here, where the package registry answers;
# benchmarks/gpu_check.sh installs them there (the device tool carries `.whl`).
#
#   bash benchmarks/gpu_wheels.sh [TEXT]   # TEXT: default /work/shared/data/tinyshakespeare.txt
#
# The list: what `fmjax train` of experiments/gpt2/gpt2_small_synthetic.py and of
# experiments/shakespeare/gpt_char.py, and the tests gpu_check.sh runs, import, less what the image
# holds (jax, flax, optax, orbax-checkpoint, chex, numpy, protobuf, PyYAML, absl-py, packaging,
# scipy, matplotlib, requests, pytest, ...: /work/.library/device/KINDS.md). Checked by running
# `gpu_check.sh --dry_run` and its tests (29 passed, 1 GPU-only skipped) with every package of
# this venv that the image lacks hidden but these (2026-11-30).
# ml_collections: configs; tensorboardX: the train loop's writer; mnist1d: the bf16 test's data.
# One version each (two stop the install there); their own requirements are in the image.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=(ml_collections==1.1.0 tensorboardX==2.6.5 mnist1d==0.0.2.post1)
TEXT=${1:-/work/shared/data/tinyshakespeare.txt}
rm -rf .whl && mkdir .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
cp "$TEXT" .whl/tinyshakespeare.txt
ls -l .whl
echo "total: $(du -sk .whl | cut -f1) KiB in .whl/"
