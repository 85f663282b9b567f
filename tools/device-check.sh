#!/usr/bin/env bash
# The device check: builds kiln on a machine with an NVIDIA GPU and runs everything that
# needs one, in stages that each have a time cap, so one slow stage cannot eat the rest.
# Prints a compact table last; the full log goes to $OUT/device-check.log (or
# build-gpu/device-check.log).
#
# On the lent GPU machine (no network, no apt) the build's Debian dependencies travel as
# .deb files in .deps/debs (tools/device/fetch-deps.sh makes them here) and a CIFAR-10
# subset in .cifar-subset (tools/device/make-cifar-subset.sh); carry both.
#
#   tools/device-check.sh            all stages
#   KILN_CHECK_STAGES="build tests"  only some (build tests info bench train sanitizer)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${OUT:-$root/build-gpu}
mkdir -p "$out"
log=$out/device-check.log
: >"$log"
build=${KILN_GPU_BUILD:-build-gpu}
stages=${KILN_CHECK_STAGES:-build tests info bench train sanitizer}
export NVIDIA_TF32_OVERRIDE=0  # compare fp32 kernels with the CPU, not TF32 ones
# The training stage uses CIFAR-10 from KILN_CIFAR10_DIR, else the carried subset, else a
# synthetic set; the tests get the full set only (a subset fails Cifar10Reader.RealCifar10).
data=${KILN_CIFAR10_DIR:-}
[ -z "$data" ] && [ -f .cifar-subset/data_batch_1.bin ] && data=$root/.cifar-subset
data_flag=${data:+--data $data}

rows=()
note() { printf '%s\n' "$*" | tee -a "$log"; }
# stage NAME CAP_SECONDS COMMAND...: runs under a time limit, logs everything, records a row.
stage() {
  local name=$1 cap=$2
  shift 2
  case " $stages " in *" $name "*) ;; *) return 0 ;; esac
  note ""
  note "=== $name (cap ${cap}s): $*"
  local t0=$SECONDS status
  timeout --kill-after=10 "$cap" bash -c "$*" >>"$log" 2>&1
  status=$?
  local took=$((SECONDS - t0)) result=ok
  [ $status -eq 124 ] || [ $status -eq 137 ] && result="TIMEOUT"
  [ $status -ne 0 ] && [ "$result" = ok ] && result="FAILED ($status)"
  note "=== $name: $result in ${took}s"
  rows+=("$(printf '%-10s %-14s %5ss' "$name" "$result" "$took")")
  return $status
}

note "kiln device check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$log"

stage build 200 "bash tools/device/unpack-deps.sh >/dev/null && KILN_BUILD_DIR=$build bash tools/device/configure.sh"
[ -f "$build/env.sh" ] && source "$build/env.sh"
kiln=$build/kiln

stage tests 120 "cd $build && ctest -j 8 -LE slow --timeout 90 --output-junit $out/ctest.xml --output-on-failure"
# Every gpu test by name with its result, from the JUnit file.
if [ -f "$out/ctest.xml" ]; then
  python3 - "$out/ctest.xml" "$out/gpu-tests.txt" <<'PY' >>"$log" 2>&1 || true
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
lines, counts = [], {}
for case in root.iter("testcase"):
    name = case.get("name", "")
    status = case.get("status", "run")
    if case.find("failure") is not None: status = "FAILED"
    elif case.find("skipped") is not None or status in ("notrun", "disabled"): status = "skipped"
    else: status = "passed"
    counts[status] = counts.get(status, 0) + 1
    if name.startswith("Cuda") or "Gpu" in name or "gpu" in name:
        lines.append(f"{status:8} {name}")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("ctest:", ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
print("\n".join(lines))
PY
fi

stage info 20 "$kiln info"
stage bench 90 "$kiln bench data/models/cifar_quick.yaml --device cuda --batch 128 --repeats 5 --steps 10 && \
  $kiln bench data/models/resnet20.yaml --device cuda --batch 128 --repeats 5 --steps 10 && \
  $kiln bench data/models/resnet20.yaml --device cuda --batch 128 --layout nhwc --repeats 5 --steps 10"
stage train 90 "$kiln train data/models/cifar_quick.yaml --device cuda --epochs 3 $data_flag --out $out/run-quick --json"
if command -v compute-sanitizer >/dev/null 2>&1; then
  stage sanitizer 90 "compute-sanitizer --tool memcheck --error-exitcode 7 $build/tests/kiln_gpu_tests \
    --gtest_filter='CudaExecutor.TrainingStepMatchesCpu*:CudaPool*:CudaBatchnorm*' && \
    compute-sanitizer --tool racecheck --error-exitcode 7 $build/tests/kiln_gpu_tests --gtest_filter='CudaBatchnorm*:CudaLoss*'"
else
  rows+=("$(printf '%-10s %-14s' sanitizer 'not available')")
fi

note ""
note "=== figures"
grep -E '^train: [0-9]+ img/s' "$log" | tee -a "$out/summary.txt" || true
grep -E '"test_accuracy"' "$log" | tail -n 1 | tee -a "$out/summary.txt" || true
note ""
note "=== device check summary"
for r in "${rows[@]}"; do note "$r"; done
note "full log: $log"
