#!/usr/bin/env bash
# The device check: builds kiln on a machine with an NVIDIA GPU and runs everything that
# needs one, in stages that each have a time cap (420 s in all, so a 600 s call has room
# to start and to be rerun), ordered by value: what a cut-short call returns is what mattered.
#
#   tools/device-check.sh            all stages, on the GPU machine (see tools/device/README.md)
#   tools/device-check.sh --plan     print the stages, `NAME (cap Ns): COMMAND`, and run nothing
#   tools/device-check.sh --host     the stages that need no GPU (CI): unpack the carried .debs,
#                                    configure and build kiln_cli with the device's flags, and
#                                    check --plan and the record's format
#   KILN_CHECK_STAGES="gpu info"     only some stages (with the build from an earlier call)
#
# After every stage it writes the record, a markdown block for data/results/gpu.md's "## Runs"
# (tools/device/record.py), to $OUT/gpu-record.md, and copies the log and its inputs to $OUT
# (8 files: what the device tool returns), so a call cut short still returns what ran. The
# line under the record's heading, and the first line this script prints on stdout at the
# end, is the verdict: FAILED (exit 1) when a stage failed, when nvidia-smi shows a GPU that
# kiln cannot see, or when a gpu test skipped for any reason but needing more GPUs.
#
# On the lent GPU machine (no network, no apt) the build's Debian dependencies travel as
# .deb files in .deps/debs (tools/device/fetch-deps.sh makes them here) and a CIFAR-10
# subset in .cifar-subset (tools/device/make-cifar-subset.sh); carry both.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mode=device
case "${1:-}" in
  --plan) mode=plan ;;
  --host) mode=host ;;
  "") ;;
  *) echo "usage: tools/device-check.sh [--plan | --host]" >&2; exit 2 ;;
esac

build=${KILN_GPU_BUILD:-build-gpu}
case $build in /*) ;; *) build=$root/$build ;; esac
work=$build/device-check   # everything the stages write; $OUT gets the 8 files that matter
out=${OUT:-}
kiln=$build/kiln
export NVIDIA_TF32_OVERRIDE=0  # compare fp32 kernels with the CPU, not TF32 ones
# The training stage uses CIFAR-10 from KILN_CIFAR10_DIR, else the carried subset, else a
# synthetic set; the tests get the full set only (a subset fails Cifar10Reader.RealCifar10).
data=${KILN_CIFAR10_DIR:-}
[ -z "$data" ] && [ -f .cifar-subset/data_batch_1.bin ] && data=$root/.cifar-subset
data_flag=${data:+--data $data}
ctest_run="ctest --test-dir $build --no-tests=error --output-on-failure"

# ---- the stages, by value: NAME, CAP (seconds), COMMAND ---------------------------------------
names=() caps=() commands=()
add() { names+=("$1"); caps+=("$2"); commands+=("$3"); }
add deps 15 "bash tools/device/unpack-deps.sh >/dev/null"
add build 160 "KILN_BUILD_DIR=$build KILN_BUILD_TARGETS='kiln_cli kiln_gpu_tests kiln_cudnn_tests' bash tools/device/configure.sh"
add gpu 55 "$ctest_run -L '^gpu\$' -j 8 --timeout 45 --output-junit $work/ctest-gpu.xml"
add cudnn 15 "$ctest_run -L '^cudnn\$' -j 8 --timeout 12 --output-junit $work/ctest-cudnn.xml"
add info 5 "$kiln info --json >$work/info.json"
add train 35 "rm -rf $work/run-quick && $kiln train data/models/cifar_quick.yaml --device cuda --epochs 3 $data_flag --out $work/run-quick --json >$work/train.jsonl"
add bench 40 "set -o pipefail; for m in resnet20:nhwc:fp32 resnet20:nhwc:bf16 resnet20:nhwc:bf16:eager resnet20:nhwc:bf16:cudnn; do \
IFS=: read -r model layout dtype mode <<<\"\$m\"; extra=; [ \"\$mode\" = eager ] && extra='--no-cuda-graph --no-fusion'; \
[ \"\$mode\" = cudnn ] && extra=--cudnn-fusion; \
$kiln bench data/models/\$model.yaml --device cuda --batch 128 --layout \$layout --dtype \$dtype --repeats 3 --steps 10 \$extra \
| sed -n \"s|^train:|\$m: train:|p\" | tee -a $work/bench.txt || exit; done; \
$kiln check data/models/airbench.yaml --target cuda --dtype bf16 | grep -m 2 '^  cuDNN on this GPU:' | tee -a $work/bench.txt || true"
add sanitizer 40 "compute-sanitizer --tool memcheck --error-exitcode 7 $build/tests/kiln_gpu_tests \
--gtest_filter='CudaExecutor.TrainingStepMatchesCpuN*:CudaExecutor.TrainingStepMatchesCpuInBf16:CudaBatchnorm.*:CudaBatchnormAct.OneValuePerChannel:CudaGraph.*'"
add rest 55 "cmake --build $build -j 16 && $ctest_run -LE 'slow|gpu|cudnn' -j 16 --timeout 30 --output-junit $work/ctest-rest.xml"
stages=${KILN_CHECK_STAGES:-${names[*]}}

if [ "$mode" = plan ]; then
  for i in "${!names[@]}"; do printf '%s (cap %ss): %s\n' "${names[$i]}" "${caps[$i]}" "${commands[$i]}"; done
  exit 0
fi

if [ "$mode" = host ]; then
  # No GPU here: what can rot without one. The .debs and nvcc may be absent (CI has nvcc,
  # not the .debs, which are git-ignored): each missing one skips its stage with a line.
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/kiln-device-host.XXXXXX")
  trap 'rm -rf "$scratch"' EXIT
  status=0
  prefix=$scratch/deps-root
  if compgen -G ".deps/debs/*.deb" >/dev/null; then
    echo "== host: deps: unpacking .deps/debs into $prefix"
    bash tools/device/unpack-deps.sh "$prefix" >/dev/null || status=1
  else
    echo "== host: deps: skipped: no .deb files in .deps/debs (tools/device/fetch-deps.sh makes them; the build below uses the system's packages)"
    mkdir -p "$prefix" && touch "$prefix/.kiln-deps-prefix"   # an empty prefix, as unpack-deps.sh marks it
  fi
  if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
    echo "== host: build: tools/device/configure.sh, the device's flags, target ${KILN_HOST_BUILD_TARGETS:-kiln_cli}"
    KILN_BUILD_DIR=${KILN_HOST_BUILD_DIR:-build-device-host} KILN_DEPS_PREFIX=$prefix KILN_CUDA_ARCH=90 \
      KILN_BUILD_TARGETS=${KILN_HOST_BUILD_TARGETS:-kiln_cli} KILN_JOBS=${KILN_JOBS:-2} \
      bash tools/device/configure.sh >"$scratch/configure.log" 2>&1 ||
      { tail -n 30 "$scratch/configure.log"; echo "== host: build: FAILED" >&2; status=1; }
  else
    echo "== host: build: skipped: no nvcc here (PATH, /usr/local/cuda/bin)"
  fi
  echo "== host: --plan and the record's format (tests/device/device_check_test.sh)"
  bash tests/device/device_check_test.sh "$root" || status=1
  [ $status -eq 0 ] && echo "== host: ok" || echo "== host: FAILED" >&2
  exit $status
fi

# ---- the device run --------------------------------------------------------------------------
mkdir -p "$work" ${out:+"$out"}
log=$work/device-check.log
: >"$log"
rm -f "$work"/{stages.tsv,info.json,train.jsonl,bench.txt,ctest-gpu.xml,ctest-cudnn.xml,ctest-rest.xml}
note() { printf '%s\n' "$*" | tee -a "$log" >&2; }
{
  echo "date=$(date -u +%Y-%m-%d)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "stages=$stages"
} >"$work/header.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$work/smi.csv" 2>&1 ||
  echo "nvidia-smi failed or not found" >"$work/smi.csv"
note "kiln device check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
note "nvidia-smi: $(head -n 1 "$work/smi.csv")"

# The record and the files the device tool returns, after every stage.
publish() {
  python3 tools/device/record.py "$work" "$work/gpu-record.md" >>"$log" 2>&1
  local verdict=$?
  if [ -n "$out" ]; then
    local f
    for f in device-check.log gpu-record.md ctest-gpu.xml ctest-cudnn.xml ctest-rest.xml info.json train.jsonl bench.txt; do
      [ -f "$work/$f" ] && cp "$work/$f" "$out/$f"
    done
  fi
  return $verdict
}

for i in "${!names[@]}"; do
  name=${names[$i]} cap=${caps[$i]} cmd=${commands[$i]}
  case " $stages " in *" $name "*) ;; *) continue ;; esac
  note ""
  note "=== $name (cap ${cap}s): $cmd"
  [ "$name" != deps ] && [ -f "$build/env.sh" ] && source "$build/env.sh"
  t0=$SECONDS result=ok
  if [ "$name" = sanitizer ] && ! command -v compute-sanitizer >/dev/null; then
    result=skipped
    note "compute-sanitizer not found (PATH, and the toolkit's bin after env.sh)"
  else
    timeout --kill-after=10 "$cap" bash -c "$cmd" >>"$log" 2>&1
    rc=$?
    case $rc in 0) ;; 124 | 137) result=TIMEOUT ;; *) result="FAILED ($rc)" ;; esac
  fi
  took=$((SECONDS - t0))
  note "=== $name: $result in ${took}s"
  printf '%s\t%s\t%s\n' "$name" "$result" "$took" >>"$work/stages.tsv"
  publish
done

publish
verdict=$?
# stdout: the verdict first, then the record (progress went to stderr and the log).
sed -n 3p "$work/gpu-record.md"
echo
cat "$work/gpu-record.md"
echo "full log: ${out:-$work}/device-check.log; record: ${out:-$work}/gpu-record.md"
exit $verdict
