#!/usr/bin/env bash
# kiln against PyTorch (Debian's python3-torch, CPU) training the same network at the same
# batch and thread count: any model spec, rebuilt in PyTorch layer for layer from kiln check
# --json (tools/reference/spec_torch.py). The machines are noisy, so runs are interleaved
# (kiln, torch, kiln, torch, ...) and the medians compared.
#
#   tools/bench-vs-torch.sh [SPEC] [--batch B] [--threads T] [--rounds R] [--cpu-conv K[,K...]] [--profile]
#
# SPEC defaults to data/models/cifar_quick.yaml at batch 128; otherwise the batch defaults
# to 32. --profile prints, instead, kiln bench's per-layer table summed by op next to
# PyTorch's autograd profiler per op (self CPU ms per step), to see where the time goes.
# --cpu-conv auto,kiln runs kiln with each kernel choice in every round (default: auto).
# The old form `tools/bench-vs-torch.sh ROUNDS THREADS` still means cifar_quick.
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${KILN_BIN:-build/kiln}
python=${PYTHON:-/usr/bin/python3}
spec=data/models/cifar_quick.yaml batch="" threads=2 rounds=5 profile=0 cpu_conv=auto
if [[ $# -ge 1 && $1 =~ ^[0-9]+$ ]]; then rounds=$1; threads=${2:-2}; set --; fi
while [[ $# -gt 0 ]]; do
  case $1 in
    --batch) batch=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --cpu-conv) cpu_conv=$2; shift 2 ;;
    --profile) profile=1; shift ;;
    -*) echo "usage: tools/bench-vs-torch.sh [SPEC] [--batch B] [--threads T] [--rounds R] [--cpu-conv auto|kiln|onednn] [--profile]" >&2; exit 2 ;;
    *) spec=$1; shift ;;
  esac
done
[[ -n $batch ]] || batch=$([[ $spec == data/models/cifar_quick.yaml ]] && echo 128 || echo 32)

if [[ $profile == 1 ]]; then
  "$python" tools/reference/spec_torch.py "$kiln" "$spec" --kiln-profile --batch "$batch" --threads "$threads"
  "$python" tools/reference/spec_torch.py "$kiln" "$spec" --profile --batch "$batch" --threads "$threads"
  exit 0
fi

# --cpu-conv K[,K...]: each kiln variant runs in every round, before PyTorch.
IFS=, read -r -a convs <<<"$cpu_conv"
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
label() { [[ ${#convs[@]} -gt 1 ]] && echo " ($1)" || true; }
declare -A k
t=()
for i in $(seq "$rounds"); do
  line="round $i:"
  for c in "${convs[@]}"; do
    v=$("$kiln" bench "$spec" --device cpu --cpu-conv "$c" --batch "$batch" --threads "$threads" --repeats 3 --steps 3 | tail -n1 | awk '{print $2}')
    k[$c]="${k[$c]:-} $v"
    line+=" kiln$(label "$c") $v img/s,"
  done
  t+=("$("$python" tools/reference/spec_torch.py "$kiln" "$spec" --batch "$batch" --threads "$threads" --repeats 3 --steps 3 |
    tail -n1 | awk '{print $2}')")
  echo "$line pytorch ${t[-1]} img/s"
done
tm=$(median "${t[@]}")
for c in "${convs[@]}"; do
  # shellcheck disable=SC2086
  km=$(median ${k[$c]})
  echo "median: kiln$(label "$c") $km img/s, pytorch $tm img/s, ratio $(awk -v a="$km" -v b="$tm" 'BEGIN {printf "%.2f", a/b}') ($(basename "$spec" .yaml), batch $batch, $threads threads, $rounds interleaved rounds)"
done
