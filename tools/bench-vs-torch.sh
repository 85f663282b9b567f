#!/usr/bin/env bash
# kiln against PyTorch (Debian's python3-torch, CPU) training cifar_quick at the same batch
# and thread count. The machines are noisy, so runs are interleaved (kiln, torch, kiln,
# torch, ...) and the medians compared. Usage: tools/bench-vs-torch.sh [rounds] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
threads=${2:-2}
kiln=${KILN_BIN:-build/kiln}
python=${PYTHON:-/usr/bin/python3}
k=() t=()
for i in $(seq "$rounds"); do
  k+=("$("$kiln" bench data/models/cifar_quick.yaml --device cpu --batch 128 --threads "$threads" | tail -n1 | awk '{print $2}')")
  t+=("$("$python" tools/reference/cifar_quick_torch.py --batch 128 --threads "$threads" | tail -n1 | awk '{print $2}')")
  echo "round $i: kiln ${k[-1]} img/s, pytorch ${t[-1]} img/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
km=$(median "${k[@]}")
tm=$(median "${t[@]}")
echo "median: kiln $km img/s, pytorch $tm img/s, ratio $(awk -v a="$km" -v b="$tm" 'BEGIN {printf "%.2f", a/b}') (batch 128, $threads threads, $rounds interleaved rounds)"
