#!/usr/bin/env bash
# The airbench race on a GPU: the full recipe of data/models/airbench.yaml (9.9 epochs, batch
# 1,024, TTA) with `kiln train --device cuda` over several seeds on CIFAR-10, next to the
# PyTorch reference (tools/reference/airbench_torch.py --device cuda) on the same GPU when
# that machine's Python has torch with CUDA. Goal: mean test accuracy >= 94.0%; time of the
# training loop against the reference's (whitening and evaluation excluded on both sides).
# Separate from tools/device-check.sh; run it only with device time left after the check.
#
#   tools/race.sh [--print-commands] [SEEDS="0 1 2 3 4"] [EPOCHS=9.9]
#
# KILN_DTYPE (default bf16; fp16 or fp32): the number type of both engines, as airbench runs
# half precision channels-last (kiln's --dtype; the reference's autocast).
# Data: $KILN_CIFAR10_DIR, the whole set for the recipe's figure. The lent GPU machine takes
# 64 MiB per call, so there the carried subset (tools/device/make-cifar-subset.sh, 10,000 +
# 5,000 images) is what runs: the block's heading then says "subset" with the counts, and its
# accuracy is not the recipe's 94%. Writes the runs under ${OUT:-/tmp}/race/ and prints a
# markdown block for data/results/gpu.md.
# kiln: $KILN_BIN, else the device check's build, ${KILN_GPU_BUILD:-build-gpu}/kiln (never
# compare-airbench.sh's own default, the CPU build's build/kiln). --print-commands resolves
# every path and prints the commands the race would run, and runs nothing.
# Never run on a GPU yet (2026-11-28): see data/results/gpu.md.
set -euo pipefail
dry_run=0
[ "${1:-}" = --print-commands ] && { dry_run=1; shift; }
data=$(realpath -e "${KILN_CIFAR10_DIR:?set KILN_CIFAR10_DIR to the CIFAR-10 binary directory (all 50,000 + 10,000 images)}")
out=$(realpath -m "${OUT:-/tmp}/race")
kiln=${KILN_BIN:+$(realpath -m "$KILN_BIN")}  # where it was started from; the rest from the repository
cd "$(dirname "$0")/.."
kiln=${kiln:-$(realpath -m "${KILN_GPU_BUILD:-build-gpu}/kiln")}
[ -x "$kiln" ] || { echo "race: $kiln not built (tools/device-check.sh builds build-gpu/kiln; or set KILN_BIN)" >&2; exit 1; }
export KILN_BIN=$kiln

seeds=${1:-0 1 2 3 4}
epochs=${2:-9.9}
bytes=0
for f in "$data"/data_batch_{1,2,3,4,5}.bin; do bytes=$((bytes + $(stat -c %s "$f"))); done
n_train=$((bytes / 3073))
n_test=$(($(stat -c %s "$data/test_batch.bin" 2>/dev/null || echo 0) / 3073))
data_label="CIFAR-10"
if [ "$n_train" -ne 50000 ] || [ "$n_test" -ne 10000 ]; then
  data_label="CIFAR-10 subset: $n_train train, $n_test test images (not the recipe's figure)"
  echo "race: warning: $data has $n_train training and $n_test test images, not 50,000 and 10,000: not the recipe's figure" >&2
fi
export KILN_COMPARE_OUT=$out
export KILN_DEVICE=cuda
export KILN_DTYPE=${KILN_DTYPE:-bf16}
# One interpreter for both the probe and the runs: the first with torch that sees the GPU.
candidates="${KILN_PYTHON:-} python3 /usr/bin/python3"
export KILN_PYTHON=
[ $dry_run = 1 ] && candidates=""  # the probe imports torch: seconds; a dry run names no interpreter
for py in $candidates; do
  if "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    KILN_PYTHON=$py
    break
  fi
done
if [ $dry_run = 1 ]; then
  export KILN_COMPARE_DRY_RUN=1 KILN_PYTHON=python3
elif [ -z "$KILN_PYTHON" ]; then
  echo "race: no Python here has torch with CUDA: kiln only, no PyTorch reference" >&2
  export KILN_COMPARE_TORCH=0 KILN_PYTHON=python3
fi
tools/reference/compare-airbench.sh "$data" "$epochs" "$seeds"
[ $dry_run = 1 ] && exit 0
{
  echo
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
  echo "### airbench race, $KILN_DTYPE, ${gpu:-unknown GPU}, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  echo "Data: $data_label. kiln with CUDA graphs and fused batchnorm+activation (its defaults)."
  echo
  echo '```'
  cat "$KILN_COMPARE_OUT/summary.txt"
  echo '```'
} | tee "$KILN_COMPARE_OUT/gpu-md-block.txt"
