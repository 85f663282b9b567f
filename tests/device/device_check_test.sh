#!/usr/bin/env bash
# The device check's parts that need no GPU, so that the script cannot rot between loans:
# --plan (its stages, their order and caps), the record (tools/device/record.py) from canned
# files (fixtures/: a real ctest JUnit file's shape), its verdicts, and that tools/race.sh
# hands compare-airbench.sh the device build's kiln.
#
#   tests/device/device_check_test.sh [REPO_ROOT]
set -uo pipefail
root=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
fixtures=$root/tests/device/fixtures
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-device-check-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
expect_grep() {  # PATTERN FILE WHAT
  grep -qE -- "$1" "$2" || { fail "$3: no line matches /$1/ in $2:"; sed 's/^/  | /' "$2" >&2; }
}

# ---- --plan: one line per stage, NAME (cap Ns): COMMAND; caps sum to <= 420; nothing run ----
build_name=build-plan-test-$$
KILN_GPU_BUILD=$build_name bash "$root/tools/device-check.sh" --plan >"$tmp/plan.txt" 2>"$tmp/plan.err" ||
  fail "--plan exited $?"
[ -s "$tmp/plan.err" ] && fail "--plan wrote to stderr: $(cat "$tmp/plan.err")"
[ -e "$root/$build_name" ] && { fail "--plan created $build_name"; rm -rf "${root:?}/$build_name"; }
bad=$(grep -cvE '^[a-z]+ \(cap [0-9]+s\): .+' "$tmp/plan.txt")
[ "$bad" -eq 0 ] || fail "--plan: $bad line(s) not 'NAME (cap Ns): COMMAND': $(grep -vE '^[a-z]+ \(cap [0-9]+s\): ' "$tmp/plan.txt")"
order=$(sed 's/ .*//' "$tmp/plan.txt" | tr '\n' ' ')
[ "$order" = "deps build gpu cudnn info train bench sanitizer rest " ] || fail "--plan: stages in order '$order'"
total=$(sed -n 's/^[a-z]* (cap \([0-9]*\)s).*/\1/p' "$tmp/plan.txt" | awk '{ sum += $1 } END { print sum }')
[ "${total:-999}" -le 420 ] || fail "--plan: caps add up to ${total}s, more than 420s"
grep -qi total "$tmp/plan.txt" && fail "--plan printed a total line"
expect_grep "^gpu \(cap [0-9]+s\): ctest .*-L '\^gpu\\$'.*--output-junit .*/$build_name/device-check/ctest-gpu.xml" "$tmp/plan.txt" "--plan gpu stage"
expect_grep "^cudnn \(cap [0-9]+s\): ctest .*-L '\^cudnn\\$'" "$tmp/plan.txt" "--plan cudnn stage"
expect_grep "^sanitizer \(cap [0-9]+s\): compute-sanitizer .*--gtest_filter=" "$tmp/plan.txt" "--plan sanitizer stage"
bash "$root/tools/device-check.sh" --bogus >/dev/null 2>&1 && fail "an unknown option was accepted"

# ---- the record from a whole run: heading, verdict, versions, every gpu test, the figures ----
record() {  # WORK_DIR -> $tmp/record.md, exit status in $rc
  python3 "$root/tools/device/record.py" "$1" "$tmp/record.md" 2>"$tmp/record.err"
  rc=$?
}
record "$fixtures"
[ $rc -eq 0 ] || fail "record of a passing run exited $rc: $(cat "$tmp/record.err")"
[ "$(sed -n 1p "$tmp/record.md")" = "### 2026-12-06, NVIDIA H100 80GB HBM3, commit abc1234" ] ||
  fail "record heading: '$(sed -n 1p "$tmp/record.md")'"
sed -n 3p "$tmp/record.md" | grep -q '^\*\*Passed' || fail "record verdict (line 3): '$(sed -n 3p "$tmp/record.md")'"
expect_grep '^- driver 580\.95\.05 .*CUDA runtime 13\.0, cuDNN 9\.19\.0' "$tmp/record.md" "record versions"
expect_grep '^- train \(cifar_quick, 3 epochs\): train accuracy 53\.00%, test accuracy 53\.00%, 53210 img/s' "$tmp/record.md" "record train figures"
expect_grep '^- bench resnet20:nhwc: 21987 img/s' "$tmp/record.md" "record bench figures"
expect_grep '^gpu tests \(ctest -L gpu\): 2 passed, 1 skipped$' "$tmp/record.md" "record gpu counts"
for name in $(sed -n 's/.*<testcase name="\([^"]*\)".*/\1/p' "$fixtures/ctest-gpu.xml" "$fixtures/ctest-cudnn.xml"); do
  expect_grep "^\| $name \| (passed|skipped|FAILED)" "$tmp/record.md" "record row of $name"
done
expect_grep '^\| CudaMultiGpu\.TwoDevices \| skipped: needs 2 GPUs, this machine has 1 \|' "$tmp/record.md" "an allowed skip"

# A variant of the canned run: copy the fixtures, then change one thing.
variant() { rm -rf "$tmp/v"; cp -r "$fixtures" "$tmp/v"; }

# A gpu test skipped for want of a working GPU (a real ctest file: one pass, one skip, one failure).
variant
cp "$fixtures/ctest-gpu-skipped.xml" "$tmp/v/ctest-gpu.xml"
record "$tmp/v"
[ $rc -eq 1 ] || fail "a skipped gpu test: record exited $rc, not 1"
expect_grep '^\*\*FAILED: 1 gpu test\(s\) skipped on a GPU machine, e\.g\. CudaPool\.Max: no CUDA device: CUDA driver version is insufficient' \
  "$tmp/record.md" "verdict on a skipped gpu test"
expect_grep '1 gpu test\(s\) failed, e\.g\. CudaLoss\.Grad' "$tmp/record.md" "verdict on a failed gpu test"
expect_grep '^\| CudaLoss\.Grad \| FAILED' "$tmp/record.md" "row of a failed gpu test"

# nvidia-smi sees a GPU, kiln does not (a driver older than the CUDA runtime).
variant
python3 - "$tmp/v/info.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); j["devices"] = []; j["driver"] = ""
json.dump(j, open(sys.argv[1], "w"))
PY
record "$tmp/v"
[ $rc -eq 1 ] || fail "a GPU kiln cannot see: record exited $rc, not 1"
sed -n 3p "$tmp/record.md" | grep -q '^\*\*FAILED: nvidia-smi shows NVIDIA H100 80GB HBM3 (driver 580\.95\.05) but kiln info finds no device' ||
  fail "verdict on a GPU kiln cannot see: '$(sed -n 3p "$tmp/record.md")'"

# A stage that timed out.
variant
sed -i 's/^bench\tok/bench\tTIMEOUT/' "$tmp/v/stages.tsv"
record "$tmp/v"
[ $rc -eq 1 ] || fail "a stage that timed out: record exited $rc, not 1"
expect_grep '^\*\*FAILED: stage bench: TIMEOUT' "$tmp/record.md" "verdict on a timed-out stage"

# A call cut short after the build: a record all the same, saying what did not run.
mkdir -p "$tmp/short"
cp "$fixtures/header.txt" "$fixtures/smi.csv" "$tmp/short/"
head -n 2 "$fixtures/stages.tsv" >"$tmp/short/stages.tsv"
record "$tmp/short"
[ $rc -eq 0 ] || fail "a run cut short: record exited $rc, not 0"
[ "$(sed -n 1p "$tmp/record.md")" = "### 2026-12-06, NVIDIA H100 80GB HBM3, commit abc1234" ] || fail "cut-short heading"
expect_grep '^\*\*Not finished: 2 of 9 stages ran; not run: gpu cudnn info train bench sanitizer rest\*\*' "$tmp/record.md" "cut-short verdict"

# ---- a device run end to end, with a stub kiln and nvidia-smi: a GPU that kiln cannot see ----
mkdir -p "$tmp/gb" "$tmp/bin" "$tmp/out"
printf '#!/bin/sh\necho "NVIDIA H100 80GB HBM3, 580.95.05, 81559 MiB"\n' >"$tmp/bin/nvidia-smi"
cat >"$tmp/gb/kiln" <<'STUB'
#!/bin/sh
case "$1" in
  info) echo '{"driver": "", "runtime": "13.0", "cudnn": "9.19.0", "cublas": "13.0.0", "devices": []}' ;;
  train) echo '{"type":"epoch","step":78,"epoch":1,"train_accuracy":0.25,"test_accuracy":0.3,"images_per_sec":100.0}' ;;
esac
STUB
chmod +x "$tmp/bin/nvidia-smi" "$tmp/gb/kiln"
PATH=$tmp/bin:$PATH KILN_GPU_BUILD=$tmp/gb KILN_CHECK_STAGES="info train" OUT=$tmp/out \
  bash "$root/tools/device-check.sh" >"$tmp/run.txt" 2>"$tmp/run.err"
rc=$?
[ $rc -eq 1 ] || fail "a device run with a GPU kiln cannot see exited $rc, not 1"
head -n 1 "$tmp/run.txt" | grep -q '^\*\*FAILED: nvidia-smi shows NVIDIA H100' ||
  fail "a device run's first line on stdout: '$(head -n 1 "$tmp/run.txt")'"
for f in gpu-record.md device-check.log info.json train.jsonl; do [ -s "$tmp/out/$f" ] || fail "a device run left no \$OUT/$f"; done
[ "$(find "$tmp/out" -type f | wc -l)" -le 8 ] || fail "a device run left more than 8 files in \$OUT (the device tool returns 8)"
expect_grep '^=== info: ok in [0-9]+s$' "$tmp/run.err" "a device run's progress on stderr"
expect_grep '^- train \(cifar_quick, 1 epochs\): train accuracy 25\.00%' "$tmp/out/gpu-record.md" "a device run's train figures"

# ---- tools/race.sh gives compare-airbench.sh the device build's kiln, not build/kiln ----
mkdir -p "$tmp/race-build" "$tmp/cifar"
printf '#!/bin/sh\nexit 0\n' >"$tmp/race-build/kiln" && chmod +x "$tmp/race-build/kiln"
for i in 1 2 3 4 5; do printf 'x' >"$tmp/cifar/data_batch_$i.bin"; done
(cd "$tmp" && KILN_GPU_BUILD=$tmp/race-build KILN_CIFAR10_DIR=cifar OUT=$tmp/out KILN_BIN= \
  bash "$root/tools/race.sh" --print-commands "0 1" 2 >"$tmp/race.txt" 2>"$tmp/race.err") ||
  fail "race.sh --print-commands exited $?: $(cat "$tmp/race.err")"
[ "$(grep -c "^$tmp/race-build/kiln train data/models/airbench.yaml --data $tmp/cifar --device cuda --dtype bf16 --epochs 2 --seed [01] .*--out $tmp/out/race/kiln-[01]$" "$tmp/race.txt")" -eq 2 ] ||
  { fail "race.sh --print-commands: not the device build's kiln with absolute paths:"; cat "$tmp/race.txt" >&2; }
grep -q "/build/kiln" "$tmp/race.txt" && fail "race.sh runs build/kiln"
[ "$(grep -c "tools/reference/airbench_torch.py .*--device cuda --dtype bf16 " "$tmp/race.txt")" -eq 2 ] ||
  { fail "race.sh --print-commands: the PyTorch reference not in the race's dtype:"; cat "$tmp/race.txt" >&2; }
(cd "$tmp" && KILN_BIN=race-build/kiln KILN_CIFAR10_DIR=cifar bash "$root/tools/race.sh" --print-commands 3 >"$tmp/race.txt" 2>/dev/null) ||
  fail "race.sh --print-commands with a relative KILN_BIN exited $?"
expect_grep "^$tmp/race-build/kiln train .* --seed 3 " "$tmp/race.txt" "race.sh honours KILN_BIN relative to where it started"
(cd "$tmp" && KILN_GPU_BUILD=$tmp/nowhere KILN_BIN= KILN_CIFAR10_DIR=cifar bash "$root/tools/race.sh" --print-commands >/dev/null 2>"$tmp/race.err") &&
  fail "race.sh with no kiln built exited 0"
expect_grep "race: $tmp/nowhere/kiln not built" "$tmp/race.err" "race.sh's message without a build"

if [ $failures -ne 0 ]; then
  echo "device_check_test: $failures failure(s)" >&2
  exit 1
fi
echo "device_check_test: ok"
