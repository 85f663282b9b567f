#!/usr/bin/env bash
# kiln against the PyTorch reference on the airbench recipe, on this machine's CPU (or GPU: see
# KILN_DEVICE below, and tools/race.sh): the same
# spec recipe (data/models/airbench.yaml) with a shortened schedule, the same CIFAR-10 files,
# for several seeds each, one run at a time (kiln, then PyTorch, seed by seed, so that both see
# the same machine load). Prints each run and the means: test accuracy (with TTA) and the
# seconds of the training loop (whitening and evaluation excluded on both sides).
#
#   tools/reference/compare-airbench.sh DATA_DIR [EPOCHS=4] [SEEDS="0 1 2"] [THREADS=nproc]
#
# DATA_DIR: a CIFAR-10 binary directory; a subset made by tools/device/make-cifar-subset.sh
# keeps it short (10,000 training images: 9 steps of 1,024 an epoch). Needs a built
# build/kiln and a Python with torch ($KILN_PYTHON, else /usr/bin/python3 when it has torch,
# as Debian's python3-torch, else python3). Writes its runs under
# ${KILN_COMPARE_OUT:-/tmp/kiln-compare-airbench}/ and the table to summary.txt there.
# KILN_DEVICE=cuda runs both on the GPU; KILN_DTYPE=bf16|fp16 runs both in mixed precision
# (kiln's --dtype; the reference's autocast, channels-last on a GPU, GradScaler in fp16; the
# reference's fp16 needs a GPU); KILN_COMPARE_TORCH=0 runs kiln alone; KILN_BIN names
# the kiln binary (tools/race.sh passes the device build's); KILN_COMPARE_DRY_RUN=1 prints the
# commands, with every path resolved, and runs nothing.
set -euo pipefail

# Paths given relative to where the script was started from, made absolute before the cd.
data=$(realpath -e "${1:?usage: tools/reference/compare-airbench.sh DATA_DIR [EPOCHS] [SEEDS] [THREADS]}")
out=$(realpath -m "${KILN_COMPARE_OUT:-/tmp/kiln-compare-airbench}")
kiln=${KILN_BIN:+$(realpath -m "$KILN_BIN")}
cd "$(dirname "$0")/../.."
kiln=${kiln:-$PWD/build/kiln}
epochs=${2:-4}
seeds=${3:-0 1 2}
threads=${4:-$(nproc)}
device=${KILN_DEVICE:-cpu}
dtype=${KILN_DTYPE:-fp32}  # both engines: kiln's --dtype, the reference's autocast (tools/race.sh)
with_torch=${KILN_COMPARE_TORCH:-1}
py=${KILN_PYTHON:-}
if [ -z "$py" ]; then
  py=python3
  /usr/bin/python3 -c "import torch" 2>/dev/null && py=/usr/bin/python3
fi
dry_run=${KILN_COMPARE_DRY_RUN:-0}
[ -x "$kiln" ] || { echo "compare-airbench: $kiln not built (cmake --build build, or set KILN_BIN)" >&2; exit 1; }
if [ "$dry_run" = 1 ]; then
  for seed in $seeds; do
    echo "$kiln train data/models/airbench.yaml --data $data --device $device --dtype $dtype --epochs $epochs --seed $seed --threads $threads --eval end --out $out/kiln-$seed"
    if [ "$with_torch" = 1 ]; then echo "$py tools/reference/airbench_torch.py --data $data --device $device --dtype $dtype --epochs $epochs --seed $seed --threads $threads --json"; fi
  done
  exit 0
fi
if [ "$with_torch" = 1 ] && ! "$py" -c "import torch" 2>/dev/null; then
  echo "compare-airbench: $py has no torch (apt-get install python3-torch, or KILN_COMPARE_TORCH=0)" >&2
  exit 1
fi
mkdir -p "$out"
results=$out/results.jsonl
: >"$results"

for seed in $seeds; do
  echo "== seed $seed: kiln ($epochs epochs, $device, $dtype, $threads threads)"
  rm -rf "$out/kiln-$seed"
  "$kiln" train data/models/airbench.yaml --data "$data" --device "$device" --dtype "$dtype" --epochs "$epochs" --seed "$seed" --threads "$threads" \
    --eval end --out "$out/kiln-$seed" >"$out/kiln-$seed.log" 2>&1 || { cat "$out/kiln-$seed.log"; exit 1; }
  "$py" - "$out/kiln-$seed/metrics.jsonl" "$seed" >>"$results" <<'EOF'
import json, sys
epochs = [j for j in map(json.loads, open(sys.argv[1])) if j.get("type") == "epoch"]
print(json.dumps({"engine": "kiln", "seed": int(sys.argv[2]), "steps": epochs[-1]["step"],
                  "test_accuracy": epochs[-1]["test_accuracy"], "train_seconds": sum(e["train_seconds"] for e in epochs)}))
EOF
  tail -1 "$results"
  [ "$with_torch" = 1 ] || continue
  echo "== seed $seed: PyTorch"
  "$py" tools/reference/airbench_torch.py --data "$data" --device "$device" --dtype "$dtype" --epochs "$epochs" --seed "$seed" \
    --threads "$threads" --json 2>"$out/torch-$seed.log" | tail -1 | "$py" -c \
    'import json, sys; r = json.loads(sys.stdin.read()); r["engine"] = "pytorch"; print(json.dumps(r))' >>"$results" ||
    { cat "$out/torch-$seed.log"; echo "compare-airbench: the PyTorch reference failed (log above)" >&2; exit 1; }
  tail -1 "$results"
done

"$py" - "$results" "$epochs" "$threads" "$device" <<'EOF' | tee "$out/summary.txt"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print(f"airbench recipe, {sys.argv[2]} epochs, device {sys.argv[4]}, {sys.argv[3]} CPU threads")
print(f"{'engine':8} {'seed':>4} {'steps':>5} {'test acc':>9} {'train s':>8}")
for r in runs:
    print(f"{r['engine']:8} {r['seed']:>4} {r['steps']:>5} {100 * r['test_accuracy']:>8.2f}% {r['train_seconds']:>8.1f}")
mean = {}
for engine in ("kiln", "pytorch"):
    rs = [r for r in runs if r["engine"] == engine]
    if not rs:
        continue
    acc = [100 * r["test_accuracy"] for r in rs]
    sec = [r["train_seconds"] for r in rs]
    sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
    mean[engine] = (statistics.mean(acc), statistics.mean(sec))
    print(f"{engine:8} mean over {len(rs)} seeds: {mean[engine][0]:.2f}% (sd {sd:.2f}), {mean[engine][1]:.1f} s")
if len(mean) == 2:
    print(f"difference kiln - PyTorch: {mean['kiln'][0] - mean['pytorch'][0]:+.2f} points; "
          f"time ratio PyTorch / kiln: {mean['pytorch'][1] / mean['kiln'][1]:.2f}")
EOF
